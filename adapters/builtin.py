"""The embedded defaults, shipped inside the package with their discriminators:

- ``builtin:mnist``: a small DCGAN trained on the embedded MNIST subset
  (``examples/train_embedded_gan.py`` writes ``hatrefine/assets/mnist_dcgan/``);
- ``builtin:twemoji``: Mimicry's SN-GAN 32 at reduced widths trained on the embedded Twemoji set,
  kept in Mimicry's own checkpoint format (``examples/train_twemoji_gan.py`` writes
  ``hatrefine/assets/twemoji_sngan/netG.pth`` and ``netD.pth``), loaded as ``mimicry:sngan_cifar10``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.files.checkpoint import load_strict, read_state_dict
from hatrefine.files.names import CONFIG
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, register_architecture, register_scheme

from . import mimicry
from .hub import load_discriminator_dir, load_generator_dir

BUILTIN = {"mnist": "mnist_dcgan", "twemoji": "twemoji_sngan"}  # spec name -> asset directory
MIMICRY = {"twemoji": "sngan_cifar10"}  # embedded generators kept as Mimicry checkpoints -> their Mimicry model


@register_architecture("dcgan_generator")
class DCGANGenerator(nn.Module):
    """z (nz) -> Linear -> 4x4 -> three stride-2 transposed convs -> (channels, 32, 32), ``out_factor`` * tanh."""

    def __init__(self, nz: int = 64, width: int = 64, channels: int = 1, out_factor: float = 1.0):
        super().__init__()
        self.width, self.out_factor = width, out_factor
        self.fc = nn.Sequential(nn.Linear(nz, 4 * 4 * 4 * width), nn.BatchNorm1d(4 * 4 * 4 * width), nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_factor * self.net(self.fc(z).view(z.shape[0], 4 * self.width, 4, 4))


@register_architecture("dcgan_discriminator")
class DCGANDiscriminator(nn.Module):
    """(channels, 32, 32) -> three stride-2 convs with leaky ReLU -> one logit.

    Trained with spectral norm; ``spectral_norm=False`` builds the shipped form, whose
    weights already hold the normalised values.
    """

    def __init__(self, width: int = 64, channels: int = 1, spectral_norm: bool = False):
        super().__init__()
        sn = nn.utils.spectral_norm if spectral_norm else (lambda m: m)
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.1),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.1),
            sn(nn.Conv2d(2 * width, 4 * width, 4, 2, 1)), nn.LeakyReLU(0.1),
            nn.Flatten(), sn(nn.Linear(4 * 4 * 4 * width, 1)),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def asset_dir(name: str) -> Path:
    """Where the files of ``builtin:NAME`` live inside the installed package."""
    return Path(str(resources.files("hatrefine") / "assets" / BUILTIN[name]))


def _builtin_generator(name: str, checkpoint: Optional[str]) -> Generator:
    directory = asset_dir(name)
    if name in MIMICRY:
        weights = directory / "netG.pth"
        if not weights.is_file():
            raise HatrefineError(f"builtin:{name} weights are missing from the package; run examples/train_twemoji_gan.py --ship or reinstall hatrefine")
        g = mimicry.load(MIMICRY[name], checkpoint or str(weights), "generator")
        g.name = f"builtin:{name}"
        return g
    if not (directory / CONFIG).is_file():
        raise HatrefineError(f"builtin:{name} weights are missing from the package; run examples/train_embedded_gan.py or reinstall hatrefine")
    g = load_generator_dir(directory, name=f"builtin:{name}")
    if checkpoint:
        load_strict(g.module, read_state_dict(checkpoint), checkpoint)
    return g


def _builtin_discriminator(name: str, checkpoint: Optional[str]) -> nn.Module:
    if name in MIMICRY:
        return mimicry.load(MIMICRY[name], checkpoint or str(asset_dir(name) / "netD.pth"), "discriminator")
    d = load_discriminator_dir(asset_dir(name))
    if checkpoint:
        load_strict(d, read_state_dict(checkpoint), checkpoint)
    return d


register_scheme("builtin", Scheme(_builtin_generator, _builtin_discriminator, names=list(BUILTIN)))
