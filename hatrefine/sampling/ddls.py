"""DDLS (Che et al. 2020), the baseline: Langevin in latent space on

    E(z) = ||z||^2 / 2 - d(G(z)) * scale / T

with d the GAN discriminator's logit. It runs on the Hat EBM's own machinery: the energy is
a ``HatEnergy`` whose "hat" is the negated (optionally calibrated) logit, with the N(0, I)
prior term on, and the sampler is a ``LangevinSampler`` that moves Z only.

Calibration (``hatrefine.sampling.density_ratio.calibrate``) fits a logistic head
``sigmoid(a * d + b)`` on real versus generated images, as DDLS recommends; ``1 / a`` is the
discriminator's temperature.
"""

from __future__ import annotations

from typing import Iterator, Optional

from torch import nn

from hatrefine.networks.generator import Generator
from hatrefine.networks.hat import NegatedLogit
from hatrefine.sampling.density_ratio import Calibration
from hatrefine.sampling.energy import HatEnergy
from hatrefine.sampling.langevin import LangevinResult, LangevinSampler
from hatrefine.settings.config import Schedule


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
