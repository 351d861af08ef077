"""The discriminator as a density ratio: a GAN's logit d(x), calibrated by a logistic head
sigmoid(a * d + b) fitted on real against generated images (as DDLS, MH-GAN and DRS recommend),
reads as an estimate l(x) = a * d(x) + b of log p_data(x) / p_g(x). ``1 / a`` is the
discriminator's temperature. Every refiner that needs only the discriminator starts here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.networks.generator import Generator
from hatrefine.sampling.langevin import frozen


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


class LogRatio(nn.Module):
    """l(x) = scale * d(x) + bias, one value per image: the (calibrated) logit as log p_data / p_g; raw without a calibration."""

    def __init__(self, discriminator: nn.Module, calibration: Optional[Calibration] = None):
        super().__init__()
        self.discriminator, self.calibration = discriminator, calibration

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.discriminator(x).reshape(len(x))
        return d if self.calibration is None else self.calibration.scale * d + self.calibration.bias
