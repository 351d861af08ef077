"""The latent-space EBM prior (Pang et al. 2020; the multi-layer joint prior of Cui, Wu, Han 2023),
the rival family to the Hat EBM: an energy on the latents of a frozen generator instead of on images.

    p(z) = exp(f(z)) N(z; 0, I) / Z,    x = G(z) + N(0, sigma^2 I)

Sampling is Langevin on the prior energy ||z||^2 / 2 - f(z), which never runs G (G runs once,
on the end latents); learning (``hatrefine fit-prior``, ``prior_trainer``) also needs posterior
samples of z given data, by Langevin on ||x - G(z)||^2 / (2 sigma^2) + ||z||^2 / 2 - f(z).
For a generator with layers of latents (``hierarchical``), f is one term per layer,
f(z_1..z_L) = sum_i f_i(z_i), and the chains move the generator's standard-normal noise.

    prior = LatentPriorRefiner.from_pretrained("runs/prior")
    out = prior.sample(64)        # out.x = G(z) with z from the learned prior; out.z
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn
from tqdm import tqdm

from hatrefine.data import as_tensor, to_unit_range
from hatrefine.distributed import Shard
from hatrefine.errors import HatrefineError
from hatrefine.files.jsonfiles import read_json
from hatrefine.files.names import CONFIG, PRIOR_WEIGHTS
from hatrefine.models.pretrained import PretrainedModel
from hatrefine.models.refiner import invert_latents
from hatrefine.networks.generator import Generator
from hatrefine.networks.latent_energy import LatentEnergy
from hatrefine.sampling.langevin import LangevinResult, LatentLangevin, seeded_latents
from hatrefine.settings.prior import KEY, PriorConfig, read_prior_settings


def latent_layers(G: Generator):
    """How G's latent splits into layers: the generator's own ``latent_layers`` (a multi-layer
    generator), else one layer, the whole latent."""
    return getattr(G.module, "latent_layers", lambda z: [z])


@dataclass
class PriorSampling:
    """What a latent-prior run samples with: K prior steps of ``step_size`` (T is always 1)."""

    langevin_steps: int
    step_size: float
    temperature: float = 1.0


class PriorSampler:
    """Prior Langevin from given latents, then G once on the end latents."""

    def __init__(self, model: "LatentPriorRefiner", n_steps: int, step_size: float):
        self.model, self.chain = model, LatentLangevin(n_steps, step_size, modules=(model.energy,), mask=model.generator.latent_mask)

    def sample(
        self, z: torch.Tensor, generator: Optional[torch.Generator] = None, path_frames: int = 0, path_chains: int = 8, shard: Shard = Shard()
    ) -> LangevinResult:
        """Run the prior chains from ``z`` (``path_frames``: decoded frames of the first ``path_chains``, for figures)."""
        G, K = self.model.generator, self.chain.n_steps
        G.check_latent(z)
        frames = tuple(sorted({round(i * K / max(1, path_frames - 1)) for i in range(path_frames)})) if path_frames else ()
        z, kept = self.chain.sample(z, self.model.prior_energy, generator, shard, frames)
        with torch.no_grad():
            g = G(z)
            path = None
            if kept:
                xs = torch.stack([G(k[:path_chains]).cpu() for k in kept])
                path = {"x": xs}
        return LangevinResult(x=g, y=torch.zeros_like(g), z=z, g=g, path=path)

    def chains(self, n: int, seed: int = 0, batch_size: int = 256, shard: Shard = Shard()) -> Iterator[LangevinResult]:
        """``n`` chains from N(0, I) in seeded chunks (``seeded_latents``)."""
        for z, rng in seeded_latents(self.model.generator, n, seed, batch_size, shard):
            yield self.sample(z, generator=rng)


class LatentPriorRefiner(PretrainedModel):
    """A fitted latent-space EBM prior on a frozen ``generator``: ``energy`` is f, ``config`` a ``PriorConfig``."""

    label = "latent EBM prior"
    weights_name, settings_key = PRIOR_WEIGHTS, KEY

    def __init__(self, generator: Generator, energy: LatentEnergy, config: PriorConfig):
        super().__init__()
        generator.require_prior()
        self.generator, self.energy, self.config = generator, energy, config
        self.layers = latent_layers(generator)
        self.sampling = PriorSampling(config.prior_steps if config.sample_steps is None else config.sample_steps, config.prior_step_size)

    @property
    def device(self) -> torch.device:
        return next(self.energy.parameters()).device

    # -- energies (one value per sample) -----------------------------------------------------
    def f(self, z: torch.Tensor) -> torch.Tensor:
        return self.energy(self.layers(z))

    def prior_energy(self, z: torch.Tensor) -> torch.Tensor:
        """||z||^2 / 2 - f(z): minus the log prior, up to its normaliser."""
        return 0.5 * z.flatten(1).square().sum(1) - self.f(z)

    def posterior_energy(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """||x - G(z)||^2 / (2 sigma^2) + ||z||^2 / 2 - f(z): minus log p(x, z), up to constants."""
        return (x - self.generator(z)).flatten(1).square().sum(1) / (2 * self.config.sigma**2) + self.prior_energy(z)

    # -- chains -------------------------------------------------------------------------------
    def sampler(self, n_steps: Optional[int] = None, step_size: Optional[float] = None) -> PriorSampler:
        s = self.sampling
        return PriorSampler(self, s.langevin_steps if n_steps is None else n_steps, s.step_size if step_size is None else step_size)

    def infer(
        self, x: torch.Tensor, z: Optional[torch.Tensor] = None, n_steps: Optional[int] = None, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Posterior samples of z given images ``x`` by Langevin from ``z`` (default: N(0, I))."""
        c = self.config
        z = self.generator.sample_latent(len(x), generator=generator) if z is None else z
        chain = LatentLangevin(
            c.posterior_steps if n_steps is None else n_steps, c.posterior_step_size, modules=(self.energy, self.generator), mask=self.generator.latent_mask
        )
        return chain.sample(z, lambda v: self.posterior_energy(v, x), generator)[0]

    def _no_hat_options(self, temperature=None, eps_y=None, pixel_only: bool = False) -> None:
        given = [name for name, v in (("--temperature", temperature), ("--eps-y", eps_y), ("--pixel-only", pixel_only or None)) if v is not None]
        if given:
            raise HatrefineError(
                f"{', '.join(given)} apply only to Hat EBM runs; a latent-prior run samples Z only (--langevin-steps and --eps-z set its chain)"
            )

    def iter_samples(
        self, n: int, seed: int = 0, batch_size: int = 256, n_steps: Optional[int] = None, shard: Shard = Shard(), temperature=None, eps_y=None, eps_z=None
    ) -> Iterator[LangevinResult]:
        """Samples G(z), z from the learned prior, in chunks of ``batch_size``; ``eps_z``: the chain's step size."""
        self._no_hat_options(temperature, eps_y)
        return self.sampler(n_steps, eps_z).chains(n, seed, batch_size, shard)

    def sample(self, n: int, seed: int = 0, batch_size: int = 256, n_steps: Optional[int] = None, **overrides) -> LangevinResult:
        """``n`` samples: ``.x`` = ``.g`` = G(z), ``.z`` from the prior, ``.y`` zero."""
        return LangevinResult.cat(list(self.iter_samples(n, seed, batch_size, n_steps, **overrides)))

    def refine(
        self,
        z: Optional[torch.Tensor] = None,
        x: Optional[torch.Tensor] = None,
        n_steps: Optional[int] = None,
        seed: int = 0,
        batch_size: int = 256,
        invert_steps: int = 200,
        value_range=None,
        progress: bool = False,
        pixel_only: bool = False,
        start: str = "invert",
        temperature=None,
        eps_y=None,
        eps_z=None,
    ) -> LangevinResult:
        """Move latents ``z`` (or the latents of images ``x``: by inversion, or ``start="encoder"`` the
        generator's own encoder) along the prior chain; returns G of the end latents."""
        self._no_hat_options(temperature, eps_y, pixel_only)
        if start not in ("invert", "encoder"):
            raise HatrefineError(f"unknown start {start!r}; use 'invert' or 'encoder'")
        if z is None and x is None:
            raise HatrefineError("refine needs latents z, images x, or both")
        G, dev = self.generator, self.device
        if z is not None:
            z = as_tensor(z, "latents z")
            G.check_latent(z)
            z = z.to(dev, G.dtype)
        elif x is not None:
            x = as_tensor(x, "input images")
            G.check_image(x, what="input images")
            x = to_unit_range(x, "input images", value_range).to(dev, G.dtype)
        rng = torch.Generator(dev).manual_seed(seed)
        sampler, parts = self.sampler(n_steps, eps_z), []
        n = len(z) if z is not None else len(x)
        for s in tqdm(range(0, n, batch_size), desc="refine" if z is not None else f"{start} + refine", unit="batch", disable=not progress, dynamic_ncols=True):
            if z is not None:
                zb = z[s : s + batch_size]
            else:
                zb = G.encode(x[s : s + batch_size]) if start == "encoder" else invert_latents(G, x[s : s + batch_size], invert_steps, seed=seed + s)
            parts.append(sampler.sample(zb, generator=rng))
        return LangevinResult.cat(parts)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The OOD score of images ``x``: the posterior energy at a posterior sample z+ of x (a
        chain of ``posterior_steps`` from N(0, I)): reconstruction ||x - G(z+)||^2 / (2 sigma^2)
        plus minus the log prior of z+ (higher = less like the training data)."""
        rng = torch.Generator(self.device).manual_seed(0)
        z = self.infer(x, generator=rng)
        with torch.no_grad():
            return self.posterior_energy(z, x)

    # -- persistence ----------------------------------------------------------------------------
    def trained(self) -> nn.Module:
        return self.energy

    @classmethod
    def read_settings(cls, directory: Path) -> PriorConfig:
        return read_prior_settings(directory)

    @classmethod
    def build(cls, directory: Path, settings: PriorConfig, generator: Generator) -> "LatentPriorRefiner":
        return cls(generator, build_energy(settings, generator), settings)


def build_energy(config: PriorConfig, generator: Generator) -> LatentEnergy:
    """f for ``generator``: one term per latent layer."""
    z = torch.zeros((1, *generator.latent_shape), device=generator.device, dtype=generator.dtype)
    with torch.no_grad():
        sizes = [v[0].numel() for v in latent_layers(generator)(z)]
    return LatentEnergy(sizes, config.energy_width, config.energy_depth, config.energy_layer_shapes(len(sizes)))


def is_prior_run(directory: Path) -> bool:
    """Whether the run in ``directory`` is a latent-prior run (``fit-prior`` or ``hierarchical``)."""
    return isinstance(read_json(directory / CONFIG).get(KEY), dict)
