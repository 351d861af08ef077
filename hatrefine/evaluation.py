"""Evaluation: how close a set of samples is to the data.

``frechet_distance`` is pytorch-fid's. The quick quality figure for the embedded MNIST
setting is the Frechet distance in the feature space of a small LeNet classifier trained
on the embedded digits (shipped as ``assets/mnist_lenet.safetensors``), the usual
"FID for MNIST" stand-in: seconds on a CPU instead of minutes with Inception.
"""

from __future__ import annotations

import warnings
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.linalg import LinAlgWarning
from torch import nn

from .checkpoint import load_strict, read_state_dict
from .errors import HatrefineError


class LeNet(nn.Module):
    """A small MNIST classifier on (1, 32, 32) images in [-1, 1]; ``features`` is its 128-d layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(64 * 4 * 4, 128)
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_lenet() -> LeNet:
    """The shipped LeNet, frozen, in eval mode."""
    net = LeNet()
    with resources.as_file(resources.files("hatrefine") / "assets" / "mnist_lenet.safetensors") as path:
        if not path.is_file():
            raise HatrefineError("the MNIST LeNet is missing from the package; run examples/train_embedded_gan.py or reinstall hatrefine")
        load_strict(net, read_state_dict(path), str(path))
    return net.requires_grad_(False).eval()


@torch.no_grad()
def feature_stats(net: nn.Module, images: torch.Tensor, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``net.features`` over ``images`` (float64)."""
    device = next(net.parameters()).device
    feats = torch.cat([net.features(images[i : i + batch_size].to(device)).double().cpu() for i in range(0, len(images), batch_size)])
    f = feats.numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(stats_a: tuple[np.ndarray, np.ndarray], stats_b: tuple[np.ndarray, np.ndarray]) -> float:
    """Frechet distance between two Gaussians given as (mean, covariance): pytorch-fid's formula.

    (A singular covariance, from fewer samples than feature dimensions, is handled there by
    an offset; its warning is silenced here.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) inside pytorch-fid
        return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))


def lenet_fd(images: torch.Tensor, reference: torch.Tensor, net: nn.Module | None = None) -> float:
    """Frechet distance between two sets of (N, 1, 32, 32) images in LeNet feature space."""
    if images.shape[1:] != (1, 32, 32) or reference.shape[1:] != (1, 32, 32):
        raise HatrefineError(f"the LeNet distance works on (N, 1, 32, 32) images, got {tuple(images.shape)}; use FID for other data")
    net = net or load_lenet()
    return frechet_distance(feature_stats(net, images), feature_stats(net, reference))
