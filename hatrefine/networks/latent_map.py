"""A map of latents T(z) = z + r(z), the residual r's last layer zero-initialised, so that T starts
as the identity (G(T(z)) equals G(z) bit for bit before training): what ``hatrefine distill``
learns, an MLP for vector latents, a small conv net for image-shaped ones."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class LatentMap(nn.Module):
    """T(z) = z + r(z) for latents of ``latent_shape``; ``depth`` hidden layers of ``width``."""

    def __init__(self, latent_shape: Sequence[int], width: int = 128, depth: int = 2):
        super().__init__()
        self.latent_shape = tuple(int(s) for s in latent_shape)
        image_like = len(self.latent_shape) == 3
        size = self.latent_shape[0] if image_like else int(torch.tensor(self.latent_shape).prod())
        layer = (lambda a, b: nn.Conv2d(a, b, 3, padding=1)) if image_like else nn.Linear
        widths = [size] + [width] * depth
        layers: list[nn.Module] = []
        for a, b in zip(widths, widths[1:]):
            layers += [layer(a, b), nn.SiLU()]
        last = layer(widths[-1], size)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.residual = nn.Sequential(*layers, last)
        self.flatten = not image_like

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = self.residual(z.flatten(1) if self.flatten else z)
        return z + r.view_as(z)
