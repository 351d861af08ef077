"""Wrap your own decoder as a hatrefine generator (any nn.Module or callable works)."""
import torch
from torch import nn

from hatrefine.adapters import wrap

decoder = nn.Sequential(  # stands in for your pretrained decoder: (N, 32) -> (N, 3, 16, 16)
    nn.Linear(32, 3 * 16 * 16), nn.Unflatten(1, (3, 16, 16)), nn.Sigmoid()
)
G = wrap(decoder, latent_shape=(32,), image_shape=(3, 16, 16), value_range=(0, 1))  # frozen
x = G(G.sample_latent(4))  # images in [-1, 1], ready for hatrefine.fit(generator=G, ...)
print(tuple(x.shape), f"[{x.min():.2f}, {x.max():.2f}]")
