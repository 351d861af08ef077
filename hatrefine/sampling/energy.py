"""The Hat EBM energy U(Y, Z) = H(G(Z) + Y) / T  [+ z_weight ||Z||^2 / 2]  [+ ||Y||^2 / (2 sigma^2)]."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.networks.generator import Generator


class HatEnergy(nn.Module):
    """Energy of a residual ``y`` and a generator image ``g = G(z)``, one value per sample.

    Args:
        hat: the hat network H (image -> scalar).
        generator: the frozen generator G.
        temperature: T; H is divided by it.
        z_prior_weight: weight of the N(0, I) prior term ||z||^2 / 2 (0 = off, as the authors ran it).
        y_sigma: sigma of the optional Gaussian prior on Y (the paper used 0.1 for retrofit).
        channels_last: put H and its inputs in channels_last memory format.
    """

    def __init__(
        self,
        hat: nn.Module,
        generator: Generator,
        temperature: float = 1.0,
        z_prior_weight: float = 0.0,
        y_sigma: Optional[float] = None,
        channels_last: bool = False,
    ):
        super().__init__()
        if temperature <= 0:
            raise HatrefineError(f"temperature must be positive, got {temperature}")
        if y_sigma is not None and y_sigma <= 0:
            raise HatrefineError(f"y_sigma must be positive, got {y_sigma}")
        self.hat, self.generator = hat, generator
        self.temperature, self.z_prior_weight, self.y_sigma = temperature, z_prior_weight, y_sigma
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            hat.to(memory_format=torch.channels_last)

    def image_energy(self, x: torch.Tensor, hat: Optional[nn.Module] = None) -> torch.Tensor:
        """H(x) / T per image, in float32: the part that learning sees (and the OOD score). The one place T
        divides H. ``hat``: the module to run H through (the trainer's DistributedDataParallel wrapper)."""
        return (hat or self.hat)(x.contiguous(memory_format=self.memory_format)).reshape(x.shape[0]).float() / self.temperature

    def gradient_penalty(self, grad_u: torch.Tensor, weight: float) -> torch.Tensor:
        """``weight`` * mean ||grad_x H||^2 / T over images, from the input gradients of U = H / T (rows of
        ``grad_u``): the penalty is on H's scale, like the loss (U's squared gradient times T)."""
        return weight * self.temperature * grad_u.square().sum(dim=1).mean()

    def forward(self, y: torch.Tensor, g: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        """U for each sample, given the residual ``y``, the image ``g = G(z)`` and (for the z prior) ``z``."""
        u = self.image_energy(g + y)
        if self.y_sigma is not None:
            u = u + y.flatten(1).square().sum(1) / (2 * self.y_sigma**2)
        if self.z_prior_weight and z is not None:
            u = u + self.z_prior_weight * 0.5 * z.flatten(1).square().sum(1)
        return u
