"""Hat networks H: an image -> one scalar energy per image.

Names (``create_hat``):
  ``sngan32``, ``sngan64``, ``sngan128``  the SN-GAN discriminators without spectral norm,
                                         mean pooling, linear head without bias, with the
                                         authors' block (raw-x shortcut, widening in its
                                         first conv, Keras init; the
                                         default ``block="authors"``) or Mimicry's
                                         (``block="mimicry"``: relu(x) shortcut, runs saved
                                         before the choice existed)
  ``small``                              a 4-layer conv net for small images (the MNIST default;
                                         any size, square or not)
  ``timm:MODEL``                         any timm model, one output, no pretrained download

``hat_from_discriminator`` turns a GAN's discriminator into a hat (``fit --hat discriminator``):
its negated logit, spectral norm removed, training starting from the discriminator's weights.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from hatrefine.errors import HatrefineError
from hatrefine.networks.resblocks import ResNetDiscriminator
from hatrefine.settings.config import HAT_BLOCKS

HATS = ("sngan32", "sngan64", "sngan128", "small")

PAPER_WIDTH = {"sngan32": 256, "sngan64": 1024, "sngan128": 1024, "small": 32}  # width None: the paper's (recipes, runs saved before DEFAULT_WIDTH)
DEFAULT_WIDTH = PAPER_WIDTH | {
    "sngan32": 64
}  # what a new fit without a recipe settles on: sngan32 at 256 costs 27 s an update on 2 CPU cores, at 64 5 s (docs/results.md)


class SmallHat(nn.Module):
    """conv3 -> three stride-2 conv4 (width w, 2w, 4w, 4w) with leaky ReLU -> linear (no bias: an energy offset is meaningless) -> scalar.

    ``size``: the image side, or (height, width); each stride-2 layer halves it (rounding down).
    Images under 8 pixels a side get as many stride-2 layers as their shorter side allows."""

    def __init__(self, channels: int, size: int | Sequence[int], width: int = 32):
        super().__init__()
        size = _pair(size)
        halvings = min(3, min(size).bit_length() - 1)
        widths = [width, 2 * width, 4 * width, 4 * width][: halvings + 1]
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        layers += [nn.Flatten(), nn.Linear(widths[-1] * math.prod(s >> halvings for s in size), 1, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NegatedLogit(nn.Module):
    """-scale * d(x): a discriminator turned into an energy (low where d thinks "real")."""

    def __init__(self, discriminator: nn.Module, scale: float = 1.0):
        super().__init__()
        self.discriminator, self.scale = discriminator, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.scale * self.discriminator(x).reshape(len(x))


def hat_from_discriminator(discriminator: nn.Module) -> NegatedLogit:
    """A trainable hat H(x) = -d(x) made from ``discriminator`` itself (pass a fresh copy).

    Spectral norm (hook-based, as Mimicry's, or a parametrization) is removed with the
    normalised weights kept, so H starts out as exactly the negated logit of ``d`` in eval mode;
    the authors' hats are the SN-GAN discriminators without spectral norm.
    """
    d = discriminator.eval()
    for m in d.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight")
        elif hasattr(m, "weight_orig"):
            nn.utils.remove_spectral_norm(m)
            # torch leaves spectral norm's load-state-dict hook behind, which would then expect weight_orig
            for key, hook in list(m._load_state_dict_pre_hooks.items()):
                if type(getattr(hook, "hook", hook)).__name__.startswith("SpectralNorm"):
                    del m._load_state_dict_pre_hooks[key]
    return NegatedLogit(d.train().requires_grad_(True))


def _sngan_hat(name: str, channels: int, w: int, block: str) -> nn.Module:
    if name == "sngan32":  # four blocks of width w, the first two downsample
        first, blocks = w, [(w, True), (w, False), (w, False)]
    elif name == "sngan64":
        first, blocks = w >> 4, [(w >> 3, True), (w >> 2, True), (w >> 1, True), (w, True)]
    else:  # sngan128
        first, blocks = w >> 4, [(w >> 3, True), (w >> 2, True), (w >> 1, True), (w, True), (w, False)]
    authors = block == "authors"
    return ResNetDiscriminator(
        channels,
        first,
        blocks,
        spectral_norm=False,
        pool="mean",
        head_bias=False,
        shortcut_relu=not authors,
        init="keras" if authors else "mimicry",
        hidden="out" if authors else "in",
    )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def default_hat(image_shape: Sequence[int]) -> str:
    """The hat network that suits an image shape: the paper's SN-GAN hat for square colour
    images of its sizes (32, 64, 128), ``small`` for grayscale 32x32 and every other shape."""
    c, h, w = image_shape
    if h == w and h in (32, 64, 128) and not (c == 1 and h == 32):
        return f"sngan{h}"
    return "small"


def create_hat(name: str, image_shape: Sequence[int], width: Optional[int] = None, block: str = "authors") -> nn.Module:
    """Build hat network ``name`` for images of ``image_shape`` (C, H, W); ``block``: the SN-GAN hats' residual block (``HAT_BLOCKS``)."""
    if block not in HAT_BLOCKS:
        raise HatrefineError(f"unknown hat block {block!r}; use {' or '.join(HAT_BLOCKS)}")
    c, h, w_ = image_shape
    if name.startswith("timm:"):
        import timm

        try:
            return timm.create_model(name[5:], pretrained=False, in_chans=c, num_classes=1)
        except RuntimeError as e:
            raise HatrefineError(f"timm has no model {name[5:]!r} ({e}); see timm.list_models()") from None
    if name not in HATS:
        raise HatrefineError(f"unknown hat network {name!r}; use one of {', '.join(HATS)} or timm:MODEL")
    width = width or PAPER_WIDTH[name]
    if width <= 0:
        raise HatrefineError(f"hat width must be positive, got {width}")
    if name == "small":
        return SmallHat(c, (h, w_), width)
    need = {"sngan32": 32, "sngan64": 64, "sngan128": 128}[name]
    if (h, w_) != (need, need):
        raise HatrefineError(f"hat {name} is for {need}x{need} images, got {h}x{w_}; use --hat {default_hat(image_shape)} (the default for {c}x{h}x{w_})")
    return _sngan_hat(name, c, width, block)


def describe_hat(name: Optional[str], image_shape: Sequence[int], width: Optional[int], hat: nn.Module) -> str:
    """One line for a run's first output: which hat, at which width, how many parameters."""
    name = name or default_hat(image_shape)
    params = sum(p.numel() for p in hat.parameters()) / 1e6
    if name == "discriminator" or name.startswith("timm:"):
        return f"hat {name} ({params:.2f} M parameters)"
    return f"hat {name}, width {width or PAPER_WIDTH[name]} ({params:.2f} M parameters)"
