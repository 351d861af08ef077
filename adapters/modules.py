"""Wrap a module or callable you own: the "wrap my custom decoder" path."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from hatrefine.errors import HatrefineError
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
    latent ends in a one-hot class drawn per sample and held along chains (see ``Generator``).

    One probe forward on two latents checks the declared shapes where the mistake is made: a
    decoder that takes another latent, or makes other images, is refused in one line naming both."""
    G = Generator(module, latent_shape, image_shape, prior=prior, value_range=value_range, name=name, classes=classes)
    declared_z, declared_x = (2, *G.latent_shape), (2, *G.image_shape)
    try:
        with torch.no_grad():
            x = G.module(torch.zeros(declared_z, device=G.device, dtype=G.dtype))
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise HatrefineError(
            f"{name} fails on latents of the declared latent_shape {tuple(latent_shape)} ({first}); declare the latent shape the decoder takes"
        ) from None
    got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
    if got != declared_x:
        raise HatrefineError(
            f"{name} makes {got[1:] if isinstance(got, tuple) else got} images from latents of shape {tuple(latent_shape)}, not the declared image_shape {tuple(image_shape)}; declare the shape it makes"
        )
    return G


def vae_decoder(decoder: nn.Module, latent_shape: Sequence[int], image_shape: Sequence[int], value_range=(-1.0, 1.0)) -> Generator:
    """A VAE decoder: the latent prior is N(0, I); joint and conditional modes both apply."""
    return wrap(decoder, latent_shape, image_shape, prior="normal", value_range=value_range, name="VAE decoder")


def autoencoder_decoder(decoder: nn.Module, latent_shape: Sequence[int], image_shape: Sequence[int], value_range=(-1.0, 1.0)) -> Generator:
    """A deterministic autoencoder's decoder: no prior, so joint mode only (the retrofit)."""
    return wrap(decoder, latent_shape, image_shape, prior=None, value_range=value_range, name="autoencoder decoder")
