"""Mimicry SN-GAN generators and discriminators, loadable from Mimicry's own checkpoints.

``mimicry:sngan_cifar10`` (32x32) and ``mimicry:sngan_celeba64`` (64x64). Checkpoints are
``{'model_state_dict', 'optimizer_state_dict', 'global_step'}`` (``netG.pth``) or a bare state
dict, matched strictly; the discriminators keep PyTorch's hook-based spectral norm so
``weight_orig`` / ``weight_u`` / ``weight_v`` load as saved. Installing Mimicry is not needed.

Without ``--checkpoint``, the model-zoo generator is downloaded once into
``$TORCH_HOME/hub/checkpoints/hatrefine/`` (the zoo has no discriminators).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from hatrefine.checkpoint import load_strict, read_state_dict
from hatrefine.errors import HatrefineError
from hatrefine.generator import Generator
from hatrefine.registry import Scheme, register_architecture, register_scheme
from hatrefine.resblocks import ResNetDiscriminator, ResNetGenerator

register_architecture("sngan_resnet_generator")(ResNetGenerator)
register_architecture("sngan_resnet_discriminator")(ResNetDiscriminator)


@dataclass(frozen=True)
class MimicryModel:
    size: int
    g_channels: tuple[int, ...]  # widths from the 4x4 bottom up
    d_first: int
    d_blocks: tuple[tuple[int, bool], ...]  # (width, downsample) after the optimized block
    zoo_id: str  # Google Drive id of the model-zoo generator

    def generator(self) -> ResNetGenerator:
        return ResNetGenerator(nz=128, channels=list(self.g_channels))

    def discriminator(self) -> ResNetDiscriminator:
        return ResNetDiscriminator(3, self.d_first, list(self.d_blocks), spectral_norm=True, pool="sum")


MODELS = {
    # SNGANGenerator32(ngf=256) / SNGANDiscriminator32(ndf=128)
    "sngan_cifar10": MimicryModel(32, (256, 256, 256, 256), 128, ((128, True), (128, False), (128, False)), "16TxezS7VBTiuPdQdjDUM0-_rHXqyPrvr"),
    # SNGANGenerator64(ngf=1024) / SNGANDiscriminator64(ndf=1024)
    "sngan_celeba64": MimicryModel(
        64, (1024, 512, 256, 128, 64), 64, ((128, True), (256, True), (512, True), (1024, True)), "1d9pYKKW9Hgi-ylOKwU0UM1ZsmUyD8Bpj"
    ),
}


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
    offline = os.environ.get("HATREFINE_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = f"pass --checkpoint PATH to a Mimicry netG file, or go online once to download it into {path.parent}"
    if offline:
        raise HatrefineError(f"mimicry:{name} weights are not cached and downloads are off; {hint}")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url or zoo_url(MODELS[name].zoo_id), str(path), progress=True)
    except OSError as e:  # URLError is an OSError
        raise HatrefineError(f"mimicry:{name} weights could not be downloaded ({e}); {hint}") from None
    return path


def _generator(name: str, checkpoint: Optional[str]) -> Generator:
    model = MODELS[name]
    path = checkpoint or fetch_zoo_checkpoint(name)
    g = model.generator()
    load_strict(g, read_state_dict(path), str(path))
    return Generator(g, latent_shape=(128,), image_shape=(3, model.size, model.size), prior="normal", name=f"mimicry:{name}")


def _discriminator(name: str, checkpoint: Optional[str]) -> nn.Module:
    if not checkpoint:
        raise HatrefineError(f"Mimicry's model zoo has no discriminator for {name}; pass --checkpoint PATH to a netD file")
    d = MODELS[name].discriminator()
    load_strict(d, read_state_dict(checkpoint), checkpoint)
    return d


register_scheme("mimicry", Scheme(_generator, _discriminator, names=list(MODELS)))
