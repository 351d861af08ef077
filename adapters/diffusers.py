"""``diffusers:ORG/NAME`` or ``diffusers:DIR``: the decoder of a diffusers ``AutoencoderKL``.

Options in brackets: ``subfolder=vae`` (the VAE of a pipeline repository, e.g.
``diffusers:stabilityai/sd-turbo[subfolder=vae]``), ``size=N`` (the image size, default the
config's ``sample_size``), ``chunk=N`` (images decoded at a time, default 8).

hatrefine's latent z ~ N(0, I) is the VAE's latent in the diffusion models' units: the decoder
gets ``z / scaling_factor + shift_factor`` (``shift_factor`` where the config has one), the
inverse of what a diffusion pipeline does to the encoder's output. Images are the decoder's,
clamped to [-1, 1] (as the diffusers image processor clamps them). Where gradients are needed,
each chunk is decoded under activation checkpointing, so memory grows with ``chunk``, not with
the batch. ``Generator.encode`` is the encoder's posterior mean in the same units (``refine
--start encoder``). Loading goes through ``AutoencoderKL.from_pretrained``, which honours
``HF_HUB_OFFLINE`` and the Hub cache.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hatrefine.errors import HatrefineError
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, register_scheme, spec_options

INSTALL = "pip install 'hatrefine[diffusers]'"
OPTIONS = {"subfolder": str, "size": int, "chunk": int}


class VAEDecoder(nn.Module):
    """An ``AutoencoderKL`` between hatrefine's N(0, I) latent and [-1, 1] images, ``chunk`` images at a time."""

    def __init__(self, vae: nn.Module, chunk: int = 8):
        super().__init__()
        self.vae, self.chunk = vae, chunk
        self.scale = float(vae.config.scaling_factor)
        self.shift = float(vae.config.get("shift_factor") or 0.0)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z / self.scale + self.shift).sample.clamp(-1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and z.requires_grad:
            return torch.cat([checkpoint(self._decode, c, use_reentrant=False) for c in z.split(self.chunk)])
        return torch.cat([self._decode(c) for c in z.split(self.chunk)])

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(self.vae.encode(c).latent_dist.mean - self.shift) * self.scale for c in x.split(self.chunk)])


def _load(spec: str, repo: str, subfolder: Optional[str]) -> nn.Module:
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise HatrefineError(f"{spec} needs the diffusers package; {INSTALL}") from None
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:  # (without accelerate, diffusers warns unless told to skip its low-memory loading)
        if not Path(repo).is_dir():
            validate_repo_id(repo)
        with warnings.catch_warnings():  # diffusers itself still passes this argument that huggingface_hub deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            return AutoencoderKL.from_pretrained(repo, subfolder=subfolder, low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
    except HFValidationError:
        raise HatrefineError(f"{spec}: {repo!r} is neither a local directory nor a Hub repository id (ORG/NAME)") from None
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        if not Path(repo).is_dir() and (constants.HF_HUB_OFFLINE or "cached files" in first or "connect" in first):
            raise HatrefineError(
                f"Hub repository {repo} is not in the local cache and the Hub cannot be reached; "
                f"go online once (unset HF_HUB_OFFLINE) or pass a local directory"
            ) from None
        if "not a valid model identifier" in first:
            raise HatrefineError(f"Hub repository {repo} does not exist or is private; check the name or log in with `hf auth login`") from None
        if "config.json" in first and subfolder is None:
            raise HatrefineError(f"{spec} has no config.json ({first}); for a pipeline repository add [subfolder=vae]") from None
        raise HatrefineError(f"{spec} could not be loaded as an AutoencoderKL ({first}); check the name and [subfolder=...]") from None


def _generator(name: str, checkpoint_path: Optional[str]) -> Generator:
    spec = f"diffusers:{name}"
    if checkpoint_path:
        raise HatrefineError(f"{spec} takes no --checkpoint; name a local directory instead: diffusers:DIR")
    repo, opts = spec_options("diffusers", name, OPTIONS)
    if opts.get("chunk", 8) <= 0:
        raise HatrefineError(f"{spec}: chunk must be positive, got {opts['chunk']}")
    vae = _load(spec, repo, opts.get("subfolder"))
    config = vae.config
    factor = 2 ** (len(config.block_out_channels) - 1)
    size = opts.get("size", config.sample_size)
    h, w = (size, size) if isinstance(size, int) else size
    if h <= 0 or w <= 0 or h % factor or w % factor:
        raise HatrefineError(f"{spec}: image size {h}x{w} is not a positive multiple of the VAE's downsampling factor {factor}; pass [size=N]")
    module = VAEDecoder(vae, opts.get("chunk", 8))
    return Generator(
        module,
        latent_shape=(config.latent_channels, h // factor, w // factor),
        image_shape=(config.out_channels, h, w),
        prior="normal",
        name=spec,
        encoder=module.encode,
    )


register_scheme("diffusers", Scheme(_generator, help="ORG/NAME or DIR", options="[subfolder=vae,size=N,chunk=N]", extra="diffusers"))
