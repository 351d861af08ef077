"""``hatrefine hierarchical``: a multi-layer generator with the joint latent EBM prior of seed 004
(Cui, Wu, Han, CVPR 2023), learned from scratch by maximum likelihood.

Layers of latents, top z_L ~ N(0, I), each lower one Gaussian given the one above (an MLP gives
its mean and log-std), the bottom one through the registered ``dcgan`` image generator; the prior
p(z_1..z_L) is proportional to exp(sum_i f_i(z_i)) p(z_1..z_L). Each step: posterior Langevin over
all layers for a data batch, prior Langevin over all layers; the image generator and the
conditionals are updated on the posterior samples (reconstruction; for the conditionals, log p at
posterior samples minus at prior samples, the gradient of the tilted prior's likelihood); each f_i
by the contrastive loss of ``fit-prior``.

The chains move the standard-normal noise of every layer (z_L = eps_L, z_i = mu_i + sigma_i eps_i):
the same joint distribution of the z's, better conditioned. So the generator is a deterministic
map from N(0, I) noise, saved as a generator directory: ``dir:RUN`` works with every other command
(the Hat EBM included), and the run itself is a latent-prior run (``sample --run RUN``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from .errors import HatrefineError
from .generator import Generator
from .adapters.hierarchical import GENERATOR_DIR, HierarchicalGenerator
from .latent_prior import KEY, PriorConfig
from .loop import LearnsGenerator
from .prior_trainer import LOG_FIELDS, PriorTrainer
from .schema import FORMAT_VERSION
from .trainer import versions

@dataclass
class HierarchicalConfig(PriorConfig):
    """Settings of ``hatrefine hierarchical`` (saved under ``hierarchical`` in config.json; the
    ``latent_prior`` entry beside it makes the run loadable as a latent-prior run)."""

    command: ClassVar[str] = "hierarchical"
    key: ClassVar[str] = "hierarchical"
    generator: str = f"dir:{GENERATOR_DIR}"  # the run's own, learned
    data: Optional[str] = "builtin:mnist"
    channels: int = 1
    latent_sizes: str = "64,16"  # bottom (the image generator's input) first
    conditional_width: int = 200
    image_width: int = 48
    generator_lr: float = 1e-4
    adam_beta1: float = 0.9  # the authors' default Adam betas
    energy_width: int = 200
    energy_depth: int = 2
    posterior_steps: int = 20  # the authors ran 40: halved for 2 CPU cores
    steps: int = 1500
    eval_samples: int = 1000

    def __post_init__(self):
        super().__post_init__()
        if self.generator != f"dir:{GENERATOR_DIR}":
            raise HatrefineError("`hatrefine hierarchical` learns its own generator; use `hatrefine fit-prior --generator SPEC` for a prior on a frozen one")
        if not self.sizes() or min(self.sizes()) <= 0:
            raise HatrefineError(f"--latent-sizes must be positive sizes, bottom layer first, e.g. 64,16; got {self.latent_sizes!r}")
        for name in ("channels", "conditional_width", "image_width"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.generator_lr > 0:
            raise HatrefineError(f"--generator-lr must be positive, got {self.generator_lr}")

    def sizes(self) -> list[int]:
        try:
            return [int(n) for n in str(self.latent_sizes).split(",")]
        except ValueError:
            return []

    def generator_kwargs(self) -> dict:
        return {"latent_sizes": self.sizes(), "width": self.conditional_width, "image_width": self.image_width, "channels": self.channels}

    def prior_settings(self) -> PriorConfig:
        """The settings of the latent-prior run this run also is."""
        return PriorConfig(**{k: v for k, v in self.to_dict().items() if k in PriorConfig.__dataclass_fields__})


class HierarchicalTrainer(LearnsGenerator, PriorTrainer):
    """Learns the multi-layer generator and its joint latent prior into ``out`` (``PriorTrainer``'s loop and guard)."""

    name = "hierarchical"
    config_class = HierarchicalConfig
    config_key = HierarchicalConfig.key
    meta_fields = PriorTrainer.meta_fields | {"g_param_groups": list}
    log_fields = LOG_FIELDS[:-2] + ["generator_loss", "conditional_loss"] + LOG_FIELDS[-2:]

    def make_generator(self) -> Generator:
        c = self.config
        module = HierarchicalGenerator(**c.generator_kwargs())
        self.g_opt = torch.optim.Adam(module.parameters(), lr=c.generator_lr, betas=(c.adam_beta1, 0.999))
        return Generator(module, (sum(c.sizes()),), (c.channels, 32, 32), name=c.generator)

    def run_config(self) -> dict:
        return {"format_version": FORMAT_VERSION, KEY: self.config.prior_settings().to_dict(), self.config_key: self.config.to_dict(), "versions": versions()}

    def update(self, loss: torch.Tensor, x: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor) -> dict:
        """The energies' step, then the generator's: reconstruction of x from the posterior layers and
        log p(posterior layers) - log p(prior layers) for the conditionals."""
        super().update(loss, x, z_pos, z_neg)
        if not torch.isfinite(loss):
            return {}
        net: HierarchicalGenerator = self.generator.module
        with torch.no_grad():
            pos, neg = net.latent_layers(z_pos), net.latent_layers(z_neg)
        net.requires_grad_(True)
        try:
            recon = (x - net.image(pos[0])).flatten(1).square().sum(1).mean() / (2 * self.config.sigma**2)
            conditional = net.log_prob(neg).mean() - net.log_prob(pos).mean()
            self.g_opt.zero_grad(set_to_none=True)
            (recon + conditional).backward()
            self.g_opt.step()
        finally:
            net.requires_grad_(False)
        return {"generator_loss": recon.item(), "conditional_loss": conditional.item()}

    def set_lr(self, factor: float) -> None:
        super().set_lr(factor)
        for group in self.g_opt.param_groups:
            group["lr"] = self.config.generator_lr * factor

    # -- persistence ------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """The prior's checkpoint (with the generator and its optimizer), then ``generator/``."""
        from .adapters.hub import save_generator_dir

        super().save_checkpoint()
        c = self.config
        save_generator_dir(self.out / GENERATOR_DIR, self.generator.module, "hierarchical_generator", c.generator_kwargs(), self.generator.latent_shape, self.generator.image_shape)

