"""The multi-layer generator of ``hatrefine hierarchical`` (Cui, Wu, Han 2023), as a registered architecture,
so its run's ``generator/`` loads as ``dir:RUN`` like any generator directory."""

from __future__ import annotations

import torch
from torch import nn

from hatrefine.networks.registry import create_architecture, register_architecture
from hatrefine.networks.resblocks import mlp

MIN_STD = 0.01  # sigma_i = exp(log sigma_i) + 0.01, as the authors
MAX_LOG_STD = 1.0  # and log sigma_i at most 1 (hatrefine's): an unbounded std let the prior chain blow up at update 118


@register_architecture("hierarchical_generator")
class HierarchicalGenerator(nn.Module):
    """Noise (eps_1..eps_L, bottom first, concatenated) -> layers z_L..z_1 -> ``dcgan_generator`` image.

    Args:
        latent_sizes: size of each layer, bottom (the image generator's input) first.
        width, depth: the conditional MLPs (hidden layers of ``width``, LeakyReLU 0.2).
        image_width, channels: the image generator's width and channel count (32 x 32 images).
    """

    def __init__(self, latent_sizes: list[int], width: int = 200, depth: int = 3, image_width: int = 48, channels: int = 1):
        super().__init__()
        self.sizes = [int(n) for n in latent_sizes]
        self.conditionals = nn.ModuleList(mlp(self.sizes[i + 1], width, depth, 2 * self.sizes[i]) for i in range(len(self.sizes) - 1))
        self.image = create_architecture("dcgan_generator", nz=self.sizes[0], width=image_width, channels=channels)

    def conditional(self, i: int, above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of layer ``i`` given layer ``i + 1``."""
        mean, log_std = self.conditionals[i](above).chunk(2, dim=1)
        return mean, log_std.clamp(max=MAX_LOG_STD).exp() + MIN_STD

    def latent_layers(self, eps: torch.Tensor) -> list[torch.Tensor]:
        """The layers z_1..z_L (bottom first) that the noise ``eps`` makes."""
        noise = list(eps.split(self.sizes, dim=1))
        layers = [noise[-1]]
        for i in reversed(range(len(self.sizes) - 1)):
            mean, std = self.conditional(i, layers[0])
            layers.insert(0, mean + std * noise[i])
        return layers

    def log_prob(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """log p(z_1..z_L) of each sample under the Gaussian layers (constants dropped)."""
        out = -0.5 * layers[-1].square().sum(1)
        for i in range(len(self.sizes) - 1):
            mean, std = self.conditional(i, layers[i + 1])
            out = out - (0.5 * ((layers[i] - mean) / std).square() + std.log()).sum(1)
        return out

    def forward(self, eps: torch.Tensor) -> torch.Tensor:
        return self.image(self.latent_layers(eps)[0])
