"""``HatRefiner``: a fitted Hat EBM (frozen generator + hat network + sampler settings).

refiner = hatrefine.fit(generator=load_generator("builtin:mnist"), data="builtin:mnist", out="runs/mnist")
out = refiner.sample(64, seed=0)             # out.x: refined images, out.z, out.y, out.g
better = refiner.refine(x=my_images)          # images only: latents found by inversion
refiner.save_pretrained("my_refiner");  HatRefiner.from_pretrained("my_refiner")
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import nn
from tqdm import tqdm

from hatrefine.data import as_tensor, to_unit_range
from hatrefine.distributed import Shard
from hatrefine.errors import HatrefineError
from hatrefine.files.jsonfiles import read_json
from hatrefine.files.names import CONFIG, HAT_WEIGHTS, SAMPLING
from hatrefine.models.pretrained import PretrainedModel
from hatrefine.networks.generator import Generator
from hatrefine.networks.hat import create_hat, default_hat, hat_from_discriminator
from hatrefine.networks.registry import (
    resolve_discriminator,
)
from hatrefine.sampling.energy import HatEnergy
from hatrefine.sampling.langevin import LangevinResult, LangevinSampler
from hatrefine.settings.config import (
    FitConfig,
    SamplingSettings,
    read_settings,
)


def build_hat(config: FitConfig, generator: Generator) -> nn.Module:
    """The hat network ``config`` names; ``discriminator``: the GAN's own, starting from its weights."""
    hat = FitConfig.default_hat(config.to_dict()) if config.hat == "auto" else config.hat
    if hat == "discriminator":
        return hat_from_discriminator(resolve_discriminator(config.discriminator or config.generator, config.generator))
    return create_hat(hat or default_hat(generator.image_shape), generator.image_shape, config.hat_width, config.hat_block)


def invert_latents(G: Generator, x: torch.Tensor, steps: int = 200, lr: float = 0.05, prior_weight: float = 1e-3, seed: int = 0) -> torch.Tensor:
    """Latents whose images are close to ``x``: minimise ||G(z) - x||^2 + w ||z||^2 / 2 with Adam
    (a held class of ``G.latent_mask`` stays as drawn)."""
    G.check_image(x, what="input images")
    g = torch.Generator(x.device).manual_seed(seed)
    z = G.sample_latent(len(x), generator=g).requires_grad_(True)
    opt, mask = torch.optim.Adam([z], lr=lr), G.latent_mask
    for _ in range(steps):
        loss = (G(z) - x).flatten(1).square().sum(1) + prior_weight * 0.5 * z.flatten(1).square().sum(1)
        opt.zero_grad()
        loss.sum().backward()
        if mask is not None:
            z.grad *= mask
        opt.step()
    return z.detach()


def read_sampling(directory: Path) -> Optional[SamplingSettings]:
    """A run's ``sampling.json`` (None for runs written before it existed)."""
    path = directory / SAMPLING
    return SamplingSettings.from_dict(read_json(path), str(path)) if path.is_file() else None


class HatRefiner(PretrainedModel):
    """A Hat EBM ready to sample: ``generator`` (frozen), ``hat`` (the weights sampling uses),
    ``config``, and ``sampling``: the K, T and step sizes it samples with (default: the config's)."""

    label = "Hat EBM"  # what reports call it
    weights_name, settings_key = HAT_WEIGHTS, "hatrefine"

    def __init__(self, generator: Generator, hat: nn.Module, config: FitConfig, sampling: Optional[SamplingSettings] = None):
        super().__init__()
        if config.mode == "conditional":
            generator.require_prior()
        self.generator, self.hat, self.config = generator, hat, config
        self.sampling = sampling or SamplingSettings.from_config(config)
        self.energy = HatEnergy(hat, generator, config.temperature, config.z_prior_weight, config.y_sigma, config.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.hat.parameters()).device

    def sampler(
        self,
        n_steps: Optional[int] = None,
        pixel_only: bool = False,
        temperature: Optional[float] = None,
        eps_y: Optional[float] = None,
        eps_z: Optional[float] = None,
        training: bool = False,
    ) -> LangevinSampler:
        """The run's sampler: K, T and the step sizes from ``self.sampling`` unless given here.

        Sampling (not ``training``) also uses the config's test-time residual prior
        (``y_sigma_test``) and initial residual scale (``init_scale_res``)."""
        c, s = self.config, self.sampling
        joint = c.mode == "joint" and not pixel_only
        t = s.temperature if temperature is None else temperature
        y_sigma = c.y_sigma if training or c.y_sigma_test is None else c.y_sigma_test
        same = t == c.temperature and y_sigma == c.y_sigma
        energy = self.energy if same else HatEnergy(self.hat, self.generator, t, c.z_prior_weight, y_sigma, c.channels_last)
        return LangevinSampler(
            energy,
            s.langevin_steps if n_steps is None else n_steps,
            eps_y=s.eps_y if eps_y is None else eps_y,
            eps_z=(s.eps_z if eps_z is None else eps_z) if joint else None,
            noise=c.noise,
            y_clip=c.y_clip if training else c.test_clip(),
            step_schedule=c.schedule(),
            amp=c.amp,
            joint_update=c.joint_update,
            init_scale_res=0.0 if training else c.init_scale_res,
        )

    # -- sampling -----------------------------------------------------------------------
    def iter_samples(
        self, n: int, seed: int = 0, batch_size: int = 256, n_steps: Optional[int] = None, shard: Shard = Shard(), **overrides
    ) -> Iterator[LangevinResult]:
        """Refined samples in chunks of ``batch_size`` (bounded memory for any ``n``); with
        ``shard``, this process's chunks only (see ``LangevinSampler.chains``). ``overrides``:
        ``temperature``, ``eps_y``, ``eps_z`` (see ``sampler``)."""
        return self.sampler(n_steps, **overrides).chains(n, seed, batch_size, shard)

    def sample(self, n: int, seed: int = 0, batch_size: int = 256, n_steps: Optional[int] = None, **overrides) -> LangevinResult:
        """``n`` refined samples: ``.x`` images, ``.z`` latents, ``.y`` residuals, ``.g`` = G(z)."""
        return LangevinResult.cat(list(self.iter_samples(n, seed, batch_size, n_steps, **overrides)))

    @torch.no_grad()
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The OOD score of images ``x``: H(x) / T (higher = less like the training data)."""
        return self.energy.image_energy(x)

    # -- refining what a user already has ------------------------------------------------
    def invert(self, x: torch.Tensor, steps: int = 200, lr: float = 0.05, prior_weight: float = 1e-3, seed: int = 0) -> torch.Tensor:
        """Latents whose images are close to ``x`` (``invert_latents``)."""
        return invert_latents(self.generator, x, steps, lr, prior_weight, seed)

    def refine(
        self,
        z: Optional[torch.Tensor] = None,
        x: Optional[torch.Tensor] = None,
        pixel_only: bool = False,
        n_steps: Optional[int] = None,
        seed: int = 0,
        batch_size: int = 256,
        invert_steps: int = 200,
        value_range: Optional[tuple[float, float]] = None,
        progress: bool = False,
        start: str = "invert",
        **overrides,
    ) -> LangevinResult:
        """Improve samples a user has: from latents ``z``, images ``x``, or both.

        With ``x``, chains start at Y = x - G(z) so the starting image is the input itself;
        with only ``x``, ``z`` is found first: by inversion (``start="invert"``) or by the
        generator's own encoder (``start="encoder"``, e.g. a VAE's). ``pixel_only`` updates Y alone.
        ``value_range``: the range ``x`` is in, e.g. (0, 1), mapped to [-1, 1] (default: [-1, 1]).
        ``progress``: a progress bar over the images (inversion and chains).
        ``overrides``: ``temperature``, ``eps_y``, ``eps_z`` (see ``sampler``).
        """
        if z is None and x is None:
            raise HatrefineError("refine needs latents z, images x, or both")
        if start not in ("invert", "encoder"):
            raise HatrefineError(f"unknown start {start!r}; use 'invert' or 'encoder'")
        if z is None and start == "encoder":
            self.generator.require_encoder()
        G, dev = self.generator, self.device
        if x is not None:
            x = as_tensor(x, "input images")
            G.check_image(x, what="input images")
            x = to_unit_range(x, "input images", value_range).to(dev, G.dtype)
        if z is not None:
            z = as_tensor(z, "latents z")
            G.check_latent(z)
            z = z.to(dev, G.dtype)
            if x is not None and len(x) != len(z):
                raise HatrefineError(f"input holds {len(x)} images but {len(z)} latents; they must pair up")
        rng = torch.Generator(dev).manual_seed(seed)
        sampler = self.sampler(n_steps, pixel_only=pixel_only, **overrides)
        parts = []
        n = len(z) if z is not None else len(x)
        desc = "refine" if z is not None else "encode + refine" if start == "encoder" else "invert + refine"
        for s in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress, dynamic_ncols=True):
            if z is not None:
                zb = z[s : s + batch_size]
            else:
                zb = G.encode(x[s : s + batch_size]) if start == "encoder" else self.invert(x[s : s + batch_size], steps=invert_steps, seed=seed + s)
            if x is None:
                parts.append(sampler.sample(zb, generator=rng))
                continue
            xb = x[s : s + batch_size]
            with torch.no_grad():
                gb = G(zb)
            res = sampler.sample(zb, xb - gb, generator=rng)
            # x + (change of Y) + (change of G(Z)): where the chain has not moved, the output
            # is the input to the bit (g + (x - g) need not round back to x)
            res.x = xb + (res.y - (xb - gb)) + (res.g - gb)
            parts.append(res)
        return LangevinResult.cat(parts)

    # -- persistence (save_pretrained / from_pretrained: ``PretrainedModel``) -----------------
    def trained(self) -> nn.Module:
        return self.hat

    def extra_files(self) -> dict[str, dict]:
        return {SAMPLING: self.sampling.to_dict()}

    @classmethod
    def read_settings(cls, directory: Path) -> FitConfig:
        return read_settings(directory / CONFIG)

    @classmethod
    def build(cls, directory: Path, settings: FitConfig, generator: Generator) -> "HatRefiner":
        return cls(generator, build_hat(settings, generator), settings, read_sampling(directory))
