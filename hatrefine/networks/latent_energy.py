"""The latent-space EBM prior's energy network."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from hatrefine.networks.registry import register_architecture
from hatrefine.networks.resblocks import mlp


@register_architecture("latent_energy")
class LatentEnergy(nn.Module):
    """f(z_1, ..., z_L) = sum_i f_i(z_i): one MLP per latent layer (Pang et al.: 100 -> 200 -> 200 -> 1).

    ``width`` and ``depth`` apply to every layer unless ``layers`` gives each its own
    ``(depth, width)``, bottom first (Cui et al. on CIFAR-10: 3 x 200 for z_1, 2 x 100 for z_2)."""

    def __init__(self, sizes: list[int], width: int = 200, depth: int = 2, layers: Optional[list[tuple[int, int]]] = None):
        super().__init__()
        layers = layers or [(depth, width)] * len(sizes)
        self.terms = nn.ModuleList(mlp(int(n), int(w), int(d)) for n, (d, w) in zip(sizes, layers))

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        return sum(f(z.flatten(1)).squeeze(1) for f, z in zip(self.terms, layers))
