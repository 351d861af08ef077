"""Mimicry SN-GAN generators and discriminators, loadable from Mimicry's own checkpoints.

``mimicry:sngan_cifar10`` (32x32) and ``mimicry:sngan_celeba64`` (64x64), at Mimicry's widths or
narrower: ``mimicry:sngan_cifar10[ngf=64,ndf=32]``, or the widths read from the checkpoint's
shapes when the spec names none. Checkpoints are
``{'model_state_dict', 'optimizer_state_dict', 'global_step'}`` (``netG.pth``) or a bare state
dict, matched strictly; the discriminators keep PyTorch's hook-based spectral norm so
``weight_orig`` / ``weight_u`` / ``weight_v`` load as saved. Installing Mimicry is not needed.

Without ``--checkpoint``, the model-zoo generator is downloaded once into
``$TORCH_HOME/hub/checkpoints/hatrefine/`` (the zoo has no discriminators).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.files.cache import offline
from hatrefine.files.checkpoint import load_strict, read_state_dict
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, register_architecture, register_scheme, spec_options
from hatrefine.networks.resblocks import ResNetDiscriminator, ResNetGenerator

register_architecture("sngan_resnet_generator")(ResNetGenerator)
register_architecture("sngan_resnet_discriminator")(ResNetDiscriminator)


@dataclass(frozen=True)
class MimicryModel:
    size: int
    ngf: int  # Mimicry's default generator width
    ndf: int  # Mimicry's default discriminator width
    g_shifts: tuple[int, ...]  # generator widths from the 4x4 bottom up, as ngf >> shift
    d_shifts: tuple[int, ...]  # discriminator widths, first block first, as ndf >> shift
    zoo_id: str  # Google Drive id of the model-zoo generator

    def generator(self, ngf: Optional[int] = None) -> ResNetGenerator:
        ngf = ngf or self.ngf
        return ResNetGenerator(nz=128, channels=[ngf >> s for s in self.g_shifts])

    def discriminator(self, ndf: Optional[int] = None) -> ResNetDiscriminator:
        widths = [(ndf or self.ndf) >> s for s in self.d_shifts]
        downsample = [i == 0 or self.size > 32 for i in range(len(widths) - 1)]  # 32x32: only the second block pools
        return ResNetDiscriminator(3, widths[0], list(zip(widths[1:], downsample)), spectral_norm=True, pool="sum")


MODELS = {
    # SNGANGenerator32(ngf=256) / SNGANDiscriminator32(ndf=128)
    "sngan_cifar10": MimicryModel(32, 256, 128, (0, 0, 0, 0), (0, 0, 0, 0), "16TxezS7VBTiuPdQdjDUM0-_rHXqyPrvr"),
    # SNGANGenerator64(ngf=1024) / SNGANDiscriminator64(ndf=1024)
    "sngan_celeba64": MimicryModel(64, 1024, 1024, (0, 1, 2, 3, 4), (4, 3, 2, 1, 0), "1d9pYKKW9Hgi-ylOKwU0UM1ZsmUyD8Bpj"),
}
OPTIONS = {"ngf": int, "ndf": int}  # mimicry:sngan_cifar10[ngf=64]: a narrower model than Mimicry's default


def checkpoint_width(state: dict[str, torch.Tensor], which: str) -> Optional[int]:
    """ngf (from ``l1.weight``: 4 x 4 x ngf outputs) or ndf (the input width of the final linear layer) of a state dict."""
    if which == "ngf":
        w = state.get("l1.weight")
        return None if w is None or w.dim() != 2 else w.shape[0] // 16
    heads = [v for k, v in state.items() if re.fullmatch(r"l\d+\.weight(_orig)?", k) and v.dim() == 2]
    return heads[0].shape[1] if heads else None


def _width(spec: str, which: str, given: Optional[int], state: dict[str, torch.Tensor], source: str) -> Optional[int]:
    """The width to build: the spec's option where given (checked against the file), else the file's own."""
    found = checkpoint_width(state, which)
    if given is not None and found is not None and given != found:
        raise HatrefineError(f"{spec}: {source} has {which} {found}, not {given}; pass [{which}={found}] or drop the option")
    if given is not None and given <= 0:
        raise HatrefineError(f"{spec}: {which} must be positive, got {given}")
    return given or found


def zoo_url(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / "hatrefine"


def fetch_zoo_checkpoint(name: str, url: Optional[str] = None) -> Path:
    """The cached model-zoo file for ``name``, downloading it once when online.

    ``HATREFINE_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids the download.
    """
    path = cache_dir() / f"mimicry_{name}_netG.pth"
    if path.is_file():
        return path
    hint = f"pass --checkpoint PATH to a Mimicry netG file, or go online once to download it into {path.parent}"
    if offline():
        raise HatrefineError(f"mimicry:{name} weights are not cached and downloads are off; {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url or zoo_url(MODELS[name].zoo_id), str(path), progress=True)
    except OSError as e:  # URLError is an OSError
        raise HatrefineError(f"mimicry:{name} weights could not be downloaded ({e}); {hint}") from None
    return path


def _generator(name: str, checkpoint: Optional[str]) -> Generator:
    base, opts = spec_options("mimicry", name, OPTIONS)
    model = MODELS[base]
    path = checkpoint or fetch_zoo_checkpoint(base)
    state = read_state_dict(path)
    g = model.generator(_width(f"mimicry:{name}", "ngf", opts.get("ngf"), state, str(path)))
    load_strict(g, state, str(path))
    return Generator(g, latent_shape=(128,), image_shape=(3, model.size, model.size), prior="normal", name=f"mimicry:{name}")


def _discriminator(name: str, checkpoint: Optional[str]) -> nn.Module:
    base, opts = spec_options("mimicry", name, OPTIONS)
    if not checkpoint:
        raise HatrefineError(f"Mimicry's model zoo has no discriminator for {base}; pass --checkpoint PATH to a netD file")
    state = read_state_dict(checkpoint)
    d = MODELS[base].discriminator(_width(f"mimicry:{name}", "ndf", opts.get("ndf"), state, checkpoint))
    load_strict(d, state, checkpoint)
    return d


def load(name: str, checkpoint: str, which: str) -> nn.Module:
    """Mimicry model ``name``'s generator (a ``Generator``) or discriminator from a checkpoint, widths read from it."""
    return _generator(name, checkpoint) if which == "generator" else _discriminator(name, checkpoint)


register_scheme("mimicry", Scheme(_generator, _discriminator, names=list(MODELS), options="[ngf=N,ndf=N]"))
