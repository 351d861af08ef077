"""DDLS (Che et al. 2020), the baseline: Langevin in latent space on

    E(z) = ||z||^2 / 2 - d(G(z)) * scale / T

with d the GAN discriminator's logit. It runs on the Hat EBM's own machinery: the energy is
a ``HatEnergy`` whose "hat" is the negated (optionally calibrated) logit, with the N(0, I)
prior term on, and the sampler is a ``LangevinSampler`` that moves Z only.

Calibration (``calibrate``) fits a logistic head ``sigmoid(a * d + b)`` on real versus
generated images, as DDLS recommends; ``1 / a`` is the discriminator's temperature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.networks.generator import Generator
from hatrefine.networks.hat import NegatedLogit
from hatrefine.sampling.energy import HatEnergy
from hatrefine.sampling.langevin import LangevinResult, LangevinSampler, frozen
from hatrefine.settings.config import Schedule


@dataclass
class Calibration:
    """A logistic head ``sigmoid(scale * d + bias)`` on the logit; ``temperature = 1 / scale``."""

    scale: float
    bias: float

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale


def fit_logistic(logits: torch.Tensor, labels: torch.Tensor, steps: int = 100) -> Calibration:
    """Fit ``sigmoid(a * logit + b)`` to 0/1 labels by binary cross-entropy (L-BFGS)."""
    logits, labels = logits.detach().double().flatten(), labels.detach().double().flatten()
    if len(logits) != len(labels) or len(logits) < 2:
        raise HatrefineError(f"calibration needs matching logits and labels (at least 2), got {len(logits)} and {len(labels)}")
    if labels.min() == labels.max():
        raise HatrefineError("calibration needs both real (1) and generated (0) examples")
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(params[0] * logits + params[1], labels)
        loss.backward()
        return loss

    opt.step(closure)
    scale, bias = (float(v) for v in params.detach())
    if not scale > 0:
        raise HatrefineError(f"the calibrated logit scale is {scale:.3g} (<= 0): the discriminator does not tell these real images from generated ones")
    return Calibration(scale, bias)


@torch.no_grad()
def calibrate(generator: Generator, discriminator: nn.Module, real: torch.Tensor, seed: int = 0, batch_size: int = 256) -> Calibration:
    """Calibrate the discriminator on ``real`` images against as many generated ones."""
    device = generator.device
    rng = torch.Generator(device).manual_seed(seed)
    logit_real, logit_fake = [], []
    with frozen(discriminator):  # inference mode for the logits, the caller's module restored after
        for s in range(0, len(real), batch_size):
            xr = real[s : s + batch_size].to(device, generator.dtype)
            logit_real.append(discriminator(xr).reshape(-1))
            logit_fake.append(discriminator(generator(generator.sample_latent(len(xr), generator=rng))).reshape(-1))
    logits = torch.cat(logit_real + logit_fake)
    labels = torch.cat([torch.ones(len(real)), torch.zeros(len(real))])
    return fit_logistic(logits.cpu(), labels)


class DDLS:
    """The DDLS sampler for ``generator`` and ``discriminator``.

    Args:
        n_steps: Langevin steps.
        eps: step size (z <- z - eps^2 / 2 * grad E + noise * eps * N(0, I)).
        temperature: T in E(z) = ||z||^2 / 2 - d(G(z)) * scale / T.
        noise: scale of the injected noise (1 = exact Langevin).
        step_schedule: decay of the step size along the chain.
        calibration: a fitted logistic head; its ``scale`` multiplies the logit.
    """

    def __init__(
        self,
        generator: Generator,
        discriminator: nn.Module,
        n_steps: int = 20,
        eps: float = 0.1,
        temperature: float = 1.0,
        noise: float = 1.0,
        step_schedule: Schedule = Schedule(),
        calibration: Optional[Calibration] = None,
    ):
        generator.require_prior()
        scale = calibration.scale if calibration else 1.0
        energy = HatEnergy(NegatedLogit(discriminator, scale), generator, temperature=temperature, z_prior_weight=1.0)
        self.generator, self.calibration = generator, calibration
        self.sampler = LangevinSampler(energy, n_steps, eps_z=eps, noise=noise, step_schedule=step_schedule)

    def iter_samples(self, n: int, seed: int = 0, batch_size: int = 256) -> Iterator[LangevinResult]:
        """Chains from z ~ N(0, I) in chunks of ``batch_size``; ``.x`` = G(z) at the last step."""
        return self.sampler.chains(n, seed, batch_size)

    def sample(self, n: int, seed: int = 0, batch_size: int = 256) -> LangevinResult:
        return LangevinResult.cat(list(self.iter_samples(n, seed, batch_size)))
