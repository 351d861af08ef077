"""Wrap a module or callable you own: the "wrap my custom decoder" path."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from hatrefine.networks.generator import Generator


def wrap(
    module: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    latent_shape: Sequence[int],
    image_shape: Sequence[int],
    prior: Optional[str] = "normal",
    value_range: Optional[tuple[float, float]] = (-1.0, 1.0),
    name: str = "custom generator",
    classes: int = 0,
) -> Generator:
    """Any torch module or callable mapping (N, *latent_shape) -> (N, C, H, W); ``classes``: the
    latent ends in a one-hot class drawn per sample and held along chains (see ``Generator``)."""
    return Generator(module, latent_shape, image_shape, prior=prior, value_range=value_range, name=name, classes=classes)


def vae_decoder(decoder: nn.Module, latent_shape: Sequence[int], image_shape: Sequence[int], value_range=(-1.0, 1.0)) -> Generator:
    """A VAE decoder: the latent prior is N(0, I); joint and conditional modes both apply."""
    return wrap(decoder, latent_shape, image_shape, prior="normal", value_range=value_range, name="VAE decoder")


def autoencoder_decoder(decoder: nn.Module, latent_shape: Sequence[int], image_shape: Sequence[int], value_range=(-1.0, 1.0)) -> Generator:
    """A deterministic autoencoder's decoder: no prior, so joint mode only (the retrofit)."""
    return wrap(decoder, latent_shape, image_shape, prior=None, value_range=value_range, name="autoencoder decoder")
