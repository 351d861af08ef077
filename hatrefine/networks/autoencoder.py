"""The retrofit autoencoder's networks: a conv encoder onto the sphere and a conv decoder
(the authors' ResNet decoder is ``resblocks.ResNetDecoder``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hatrefine.networks.registry import register_architecture
from hatrefine.settings.autoencoder import latent_levels


def project_to_sphere(e: torch.Tensor) -> torch.Tensor:
    """Scale each sample to norm sqrt(m), m its number of elements."""
    m = e[0].numel()
    return F.normalize(e.flatten(1), dim=1).mul(math.sqrt(m)).view_as(e)


@register_architecture("ae_encoder")
class Encoder(nn.Module):
    """(C, S, S) -> conv3 -> k stride-2 conv4 (width doubling) -> two conv3 -> latent (c, s, s) on the sphere."""

    def __init__(self, channels: int = 1, size: int = 32, latent_shape: tuple = (1, 16, 16), width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        w = width
        for _ in range(latent_levels(size, latent_shape[1])):
            layers += [nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2)]
            w *= 2
        layers += [nn.Conv2d(w, w, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, latent_shape[0], 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return project_to_sphere(self.net(x))


@register_architecture("ae_decoder")
class Decoder(nn.Module):
    """latent (c, s, s) -> two conv3 -> k x (2x nearest upsample, conv3; width halving) -> conv3 -> (C, S, S), ``out_factor`` * tanh."""

    def __init__(self, channels: int = 1, size: int = 32, latent_shape: tuple = (1, 16, 16), width: int = 64, out_factor: float = 1.0):
        super().__init__()
        self.out_factor = out_factor
        k = latent_levels(size, latent_shape[1])
        w = width << k
        layers: list[nn.Module] = [nn.Conv2d(latent_shape[0], w, 3, 1, 1), nn.ReLU(), nn.Conv2d(w, w, 3, 1, 1), nn.ReLU()]
        for _ in range(k):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w // 2, 3, 1, 1), nn.ReLU()]
            w //= 2
        layers += [nn.Conv2d(w, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_factor * self.net(z)
