"""SN-GAN residual blocks, laid out as in Mimicry (torch_mimicry) so its checkpoints load.

Attribute names (``c1, c2, b1, b2, c_sc``) and the order of operations follow Mimicry,
including one detail that changes numbers: Mimicry's ``DBlock`` applies an in-place
ReLU to its input before the residual branch, so its shortcut sees ``relu(x)``. We do the
same out of place (autograd-safe, same values) for Mimicry's discriminators; the Hat EBM
authors' hat block (their ``EBMBlock``) feeds the raw input to the shortcut
(``shortcut_relu=False``), widens in its first convolution, not its second
(``hidden="out"``), and starts from Keras' initialisation (Glorot-uniform kernels, zero
biases: ``init="keras"``). The authors' TensorFlow generators normalise with Keras' batch-norm
epsilon (``bn_eps=1e-3``); ``ResNetDecoder`` is their retrofit decoder (``gen_decoder``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, k: int, spectral_norm: bool, gain: float) -> nn.Module:
    conv = nn.Conv2d(cin, cout, k, 1, padding=k // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    # The hook-based spectral norm stores weight_orig / weight_u / weight_v, as Mimicry's files do.
    return nn.utils.spectral_norm(conv) if spectral_norm else conv


def linear(cin: int, cout: int, spectral_norm: bool, bias: bool = True) -> nn.Module:
    """A linear layer with Xavier init, optionally spectrally normalised (Mimicry's ``SNLinear``)."""
    lin = nn.Linear(cin, cout, bias=bias)
    nn.init.xavier_uniform_(lin.weight, 1.0)
    return nn.utils.spectral_norm(lin) if spectral_norm else lin


def keras_init(module: nn.Module) -> None:
    """Keras' defaults, as the authors' TensorFlow networks start: Glorot-uniform kernels (gain 1), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight, 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class GBlock(nn.Module):
    """Generator block: BN -> ReLU -> (upsample) -> conv3 -> BN -> ReLU -> conv3, plus shortcut."""

    def __init__(self, cin: int, cout: int, upsample: bool = False, bn_eps: float = 1e-5):
        super().__init__()
        self.upsample = upsample
        self.c1 = _conv(cin, cout, 3, False, math.sqrt(2.0))
        self.c2 = _conv(cout, cout, 3, False, math.sqrt(2.0))
        self.b1 = nn.BatchNorm2d(cin, eps=bn_eps)
        self.b2 = nn.BatchNorm2d(cout, eps=bn_eps)
        self.c_sc = _conv(cin, cout, 1, False, 1.0) if (cin != cout or upsample) else None

    def _up(self, x: torch.Tensor) -> torch.Tensor:
        if not self.upsample:
            return x
        # CUDA's bilinear upsampling is 19-65x faster in NHWC on these small maps (measured on an H100)
        layout = torch.channels_last if x.is_cuda else torch.contiguous_format
        return F.interpolate(x.contiguous(memory_format=layout), scale_factor=2, mode="bilinear", align_corners=False).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(self._up(F.relu(self.b1(x))))
        h = self.c2(F.relu(self.b2(h)))
        sc = self.c_sc(self._up(x)) if self.c_sc is not None else x
        return h + sc


class DBlock(nn.Module):
    """Discriminator block: ReLU -> conv3 -> ReLU -> conv3 -> (avg pool), plus a shortcut on
    relu(x) (Mimicry's) or, with ``shortcut_relu=False``, on x (the Hat EBM authors').
    ``hidden``: the width between the convolutions, ``"in"`` (Mimicry's) or ``"out"`` (the authors')."""

    def __init__(self, cin: int, cout: int, downsample: bool = False, spectral_norm: bool = True, shortcut_relu: bool = True, hidden: str = "in"):
        super().__init__()
        self.downsample, self.shortcut_relu = downsample, shortcut_relu
        mid = cin if hidden == "in" else cout
        self.c1 = _conv(cin, mid, 3, spectral_norm, math.sqrt(2.0))
        self.c2 = _conv(mid, cout, 3, spectral_norm, math.sqrt(2.0))
        self.c_sc = _conv(cin, cout, 1, spectral_norm, 1.0) if (cin != cout or downsample) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))
        if self.shortcut_relu:
            x = F.relu(x)  # Mimicry's in-place ReLU also feeds the shortcut
        sc = self.c_sc(x) if self.c_sc is not None else x
        if self.downsample:
            h, sc = F.avg_pool2d(h, 2), F.avg_pool2d(sc, 2)
        return h + sc


class DBlockOptimized(nn.Module):
    """First discriminator block: conv3 -> ReLU -> conv3 -> avg pool, shortcut pool -> conv1."""

    def __init__(self, cin: int, cout: int, spectral_norm: bool = True):
        super().__init__()
        self.c1 = _conv(cin, cout, 3, spectral_norm, math.sqrt(2.0))
        self.c2 = _conv(cout, cout, 3, spectral_norm, math.sqrt(2.0))
        self.c_sc = _conv(cin, cout, 1, spectral_norm, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)
        return h + self.c_sc(F.avg_pool2d(x, 2))


class ResNetGenerator(nn.Module):
    """SN-GAN ResNet generator (Mimicry ``SNGANGenerator32/64/128``): nz -> 3 x S x S in (-1, 1)
    (times ``out_factor``: the authors' ``gen_factor`` for generators learned from scratch).

    ``channels`` lists the feature widths from the 4x4 bottom to the last block; the
    layer names (``l1``, ``block2`` ..., final ``b{n}`` / ``c{n}``) match Mimicry's.
    """

    def __init__(self, nz: int, channels: list[int], out_channels: int = 3, bottom_width: int = 4, out_factor: float = 1.0, bn_eps: float = 1e-5):
        super().__init__()
        self.nz, self.bottom_width, self.out_factor = nz, bottom_width, out_factor
        self.l1 = nn.Linear(nz, bottom_width * bottom_width * channels[0])
        nn.init.xavier_uniform_(self.l1.weight, 1.0)
        for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
            self.add_module(f"block{i + 2}", GBlock(cin, cout, upsample=True, bn_eps=bn_eps))
        last = len(channels) + 1
        self.final_bn_name, self.final_conv_name = f"b{last}", f"c{last}"
        self.add_module(self.final_bn_name, nn.BatchNorm2d(channels[-1], eps=bn_eps))
        self.add_module(self.final_conv_name, _conv(channels[-1], out_channels, 3, False, 1.0))
        self.n_blocks = len(channels) - 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.l1(z).view(z.shape[0], -1, self.bottom_width, self.bottom_width)
        for i in range(self.n_blocks):
            h = getattr(self, f"block{i + 2}")(h)
        h = F.relu(getattr(self, self.final_bn_name)(h))
        return self.out_factor * torch.tanh(getattr(self, self.final_conv_name)(h))


class GBlockStem(nn.Module):
    """First block of the authors' retrofit decoder: conv3 -> BN -> ReLU -> conv3, shortcut conv1 (their names: ``b2`` is its only BN)."""

    def __init__(self, cin: int, cout: int, bn_eps: float = 1e-3):
        super().__init__()
        self.c1 = _conv(cin, cout, 3, False, math.sqrt(2.0))
        self.b2 = nn.BatchNorm2d(cout, eps=bn_eps)
        self.c2 = _conv(cout, cout, 3, False, math.sqrt(2.0))
        self.c_sc = _conv(cin, cout, 1, False, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(F.relu(self.b2(self.c1(x)))) + self.c_sc(x)


class ResNetDecoder(nn.Module):
    """The Hat EBM authors' retrofit decoder (``GenDecoder32``): a C x 16 x 16 latent -> 3 x 32 x 32
    in ``out_factor`` * (-1, 1).

    A stem (``GBlockStem``) to ``width`` channels, one upsampling
    and two plain ``GBlock``s, then BN -> ReLU -> conv3 -> tanh."""

    def __init__(self, latent_channels: int = 1, width: int = 256, out_channels: int = 3, out_factor: float = 2.0, bn_eps: float = 1e-3):
        super().__init__()
        self.out_factor = out_factor
        self.block1 = GBlockStem(latent_channels, width, bn_eps)
        self.block2 = GBlock(width, width, upsample=True, bn_eps=bn_eps)
        self.block3 = GBlock(width, width, bn_eps=bn_eps)
        self.block4 = GBlock(width, width, bn_eps=bn_eps)
        self.b5 = nn.BatchNorm2d(width, eps=bn_eps)
        self.c5 = _conv(width, out_channels, 3, False, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.block4(self.block3(self.block2(self.block1(z))))
        return self.out_factor * torch.tanh(self.c5(F.relu(self.b5(h))))


class ResNetDiscriminator(nn.Module):
    """SN-GAN ResNet discriminator (Mimicry ``SNGANDiscriminator32/64``) -> one logit per image.

    ``blocks`` lists ``(out_channels, downsample)`` after the optimized first block. With
    ``spectral_norm=False``, ``pool="mean"``, ``head_bias=False``, ``shortcut_relu=False``,
    ``hidden="out"`` and ``init="keras"`` it is the paper's hat network as the authors built it.
    """

    def __init__(
        self,
        in_channels: int,
        first_channels: int,
        blocks: list[tuple[int, bool]],
        spectral_norm: bool = True,
        pool: str = "sum",
        head_bias: bool = True,
        shortcut_relu: bool = True,
        init: str = "mimicry",
        hidden: str = "in",
    ):
        super().__init__()
        self.pool = pool
        self.block1 = DBlockOptimized(in_channels, first_channels, spectral_norm)
        cin = first_channels
        for i, (cout, down) in enumerate(blocks):
            self.add_module(f"block{i + 2}", DBlock(cin, cout, down, spectral_norm, shortcut_relu, hidden))
            cin = cout
        self.n_blocks = len(blocks) + 1
        self.head_name = f"l{self.n_blocks + 1}"
        self.add_module(self.head_name, linear(cin, 1, spectral_norm, bias=head_bias))
        if init == "keras":
            keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i in range(self.n_blocks):
            h = getattr(self, f"block{i + 1}")(h)
        h = F.relu(h)
        h = h.sum(dim=(2, 3)) if self.pool == "sum" else h.mean(dim=(2, 3))
        return getattr(self, self.head_name)(h)


def mlp(n_in: int, width: int, depth: int, n_out: int = 1, slope: float = 0.2) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` with LeakyReLU(``slope``), then a linear output."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.LeakyReLU(slope)]
    return nn.Sequential(*layers, nn.Linear(width if depth else n_in, n_out))
