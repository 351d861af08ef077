"""Concrete generator adapters (installed as ``hatrefine.adapters``).

Importing this package registers every spec scheme: ``builtin:``, ``mimicry:``, ``hf:``,
``dir:``, ``torchscript:``, ``ae:``, ``hatebm:`` (the authors' released models), ``diffusers:``
(a diffusers VAE), ``biggan:`` (BigGAN-deep), ``py:`` (your own factory), and the architecture of a
distilled generator directory (``dir:``); the libraries behind
``diffusers:`` and ``biggan:`` are imported only when such a spec is loaded. ``wrap`` / ``vae_decoder`` / ``autoencoder_decoder`` wrap your own module.
"""

from . import (  # noqa: F401  (registration side effects)
    autoencoder,
    biggan,
    builtin,
    diffusers,
    distilled,
    hatebm,
    hub,
    mimicry,
    python,
    torchscript,
)
from .modules import autoencoder_decoder, vae_decoder, wrap

__all__ = ["wrap", "vae_decoder", "autoencoder_decoder"]
