"""``hatrefine hierarchical``: a multi-layer generator with the joint latent EBM prior
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

import torch

from hatrefine.files.names import GENERATOR_DIR
from hatrefine.files.schema import FORMAT_VERSION, versions
from hatrefine.networks.generator import Generator
from hatrefine.networks.hierarchical import HierarchicalGenerator
from hatrefine.settings.prior import KEY, HierarchicalConfig
from hatrefine.training.loop import LearnsGenerator
from hatrefine.training.prior_trainer import LOG_FIELDS, PriorTrainer


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
        from hatrefine.adapters.hub import save_generator_dir

        super().save_checkpoint()
        c = self.config
        save_generator_dir(
            self.out / GENERATOR_DIR,
            self.generator.module,
            "hierarchical_generator",
            c.generator_kwargs(),
            self.generator.latent_shape,
            self.generator.image_shape,
        )
