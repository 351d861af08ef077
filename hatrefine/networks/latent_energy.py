"""The latent-space EBM prior's energy network."""

from __future__ import annotations

import torch
from torch import nn

from hatrefine.networks.registry import register_architecture
from hatrefine.networks.resblocks import mlp


@register_architecture("latent_energy")
class LatentEnergy(nn.Module):
    """f(z_1, ..., z_L) = sum_i f_i(z_i): one MLP per latent layer (Pang et al.: 100 -> 200 -> 200 -> 1)."""

    def __init__(self, sizes: list[int], width: int = 200, depth: int = 2):
        super().__init__()
        self.terms = nn.ModuleList(mlp(int(n), width, depth) for n in sizes)

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        return sum(f(z.flatten(1)).squeeze(1) for f, z in zip(self.terms, layers))
