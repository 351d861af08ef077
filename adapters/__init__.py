"""Concrete generator adapters (installed as ``hatrefine.adapters``).

Importing this package registers every spec scheme: ``builtin:``, ``mimicry:``, ``hf:``,
``dir:``, ``torchscript:``, ``ae:``, ``py:`` (your own factory). ``wrap`` / ``vae_decoder`` / ``autoencoder_decoder`` wrap your own module.
"""

from . import autoencoder, builtin, hub, mimicry, python, torchscript  # noqa: F401  (registration side effects)
from .modules import autoencoder_decoder, vae_decoder, wrap

__all__ = ["wrap", "vae_decoder", "autoencoder_decoder"]
