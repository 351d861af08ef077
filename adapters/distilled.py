"""A distilled generator: a frozen base generator behind a learned latent map, G(T(z))
(``hatrefine distill``). A generator directory names it as the architecture
``distilled_generator``, whose weights are T's alone; the base is rebuilt from its spec."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from hatrefine.networks.latent_map import LatentMap
from hatrefine.networks.registry import load_generator, register_architecture


@register_architecture("distilled_generator")
class DistilledGenerator(nn.Module):
    """x = base(T(z)): ``base`` a generator spec (with its ``checkpoint``), T a ``LatentMap``."""

    def __init__(self, base: str, latent_shape, width: int = 128, depth: int = 2, checkpoint: Optional[str] = None):
        super().__init__()
        object.__setattr__(self, "base", load_generator(base, checkpoint))  # frozen and not part of the state dict
        self.map = LatentMap(latent_shape, width, depth)

    def _apply(self, fn, recurse: bool = True):
        self.base._apply(fn)
        return super()._apply(fn, recurse)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.base(self.map(z))
