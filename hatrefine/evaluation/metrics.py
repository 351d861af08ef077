"""Evaluation: how close a set of samples is to the data.

``fid``: the Frechet Inception distance, with pytorch-fid's network (``inception.py``) and
Frechet distance; the data's statistics are computed once per (data, split, N, image
shape, Inception source) and cached (``reference_stats``).

``prdc``: precision and recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et
al. 2020) of samples against data in the same features, by the ``prdc`` package: what a
Frechet distance folds into one number, split into fidelity (precision, density) and
diversity (recall, coverage).

The quick quality figure for the embedded MNIST setting is the Frechet distance in the
feature space of a small LeNet classifier trained on the embedded digits (shipped as
``assets/mnist_lenet.safetensors``), the usual "FID for MNIST" stand-in: seconds on a
CPU instead of minutes with Inception; ``class_histogram`` gives its labels of samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sys
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid.fid_score import calculate_frechet_distance
from scipy.linalg import LinAlgWarning
from torch import nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from hatrefine.data import open_dataset
from hatrefine.distributed import Shard
from hatrefine.errors import HatrefineError
from hatrefine.evaluation.inception import InceptionFeatures
from hatrefine.files.cache import cache_root
from hatrefine.files.checkpoint import load_strict, read_state_dict, save_tensors


class LeNet(nn.Module):
    """A small classifier of 10 classes on (channels, 32, 32) images in [-1, 1]; ``features`` is its
    128-d layer. The quick quality figure's network: MNIST digits (1 channel) and Twemoji categories (3)."""

    def __init__(self, channels: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc = nn.Linear(64 * 4 * 4, 128)
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class QuickNet:
    """A shipped classifier whose features give the quick quality figure for one image shape."""

    name: str  # in record keys: frechet_distance_NAME, NAME_fd
    label: str  # in printed lines
    asset: str  # the weights file in hatrefine/assets/
    items: str  # what its classes sort: digits, emoji
    trained_by: str  # the script that writes the asset


QUICK_NETS = {
    (1, 32, 32): QuickNet("lenet", "LeNet", "mnist_lenet.safetensors", "digits", "examples/train_embedded_gan.py"),
    (3, 32, 32): QuickNet("emoji", "emoji-classifier", "twemoji_classifier.safetensors", "emoji", "examples/train_twemoji_gan.py --classifier"),
}


def quick_net(image_shape) -> Optional[QuickNet]:
    """The quick classifier for images of ``image_shape``, if one ships (None: Inception's features)."""
    spec = QUICK_NETS.get(tuple(image_shape))
    return spec if spec is not None and (resources.files("hatrefine") / "assets" / spec.asset).is_file() else None


def load_classifier(image_shape=(1, 32, 32)) -> LeNet:
    """The shipped quick classifier for ``image_shape`` (the MNIST LeNet by default), frozen, in eval mode."""
    spec = QUICK_NETS.get(tuple(image_shape))
    if spec is None:
        raise HatrefineError(f"no quick classifier ships for {'x'.join(map(str, image_shape))} images; use FID (hatrefine eval)")
    net = LeNet(image_shape[0])
    with resources.as_file(resources.files("hatrefine") / "assets" / spec.asset) as path:
        if not path.is_file():
            raise HatrefineError(f"the {spec.label} is missing from the package; run {spec.trained_by} or reinstall hatrefine")
        load_strict(net, read_state_dict(path), str(path))
    return net.requires_grad_(False).eval()


def load_lenet() -> LeNet:
    """The shipped MNIST LeNet, frozen, in eval mode."""
    return load_classifier((1, 32, 32))


def _batches(images: torch.Tensor | Dataset, batch_size: int) -> Iterator[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        if isinstance(images, torch.Tensor):
            yield images[i : i + batch_size]
        else:
            yield torch.stack([images[j][0] for j in range(i, min(i + batch_size, len(images)))])


@torch.no_grad()
def partial_stats(
    net: nn.Module,
    images: torch.Tensor | Dataset,
    batch_size: int = 500,
    progress: bool = False,
    desc: str = "features",
    shard: Shard = Shard(),
    sink: Optional[Callable[[int, torch.Tensor], None]] = None,
) -> torch.Tensor:
    """Sufficient statistics of this shard's block of ``images``: [count, sum of features, sum of
    their outer products] packed in one float64 vector (so that ranks can add them up).

    ``sink(index, features)``, if given, also receives each batch's features and the index of its first image."""
    lo, hi = len(images) * shard.rank // shard.world, len(images) * (shard.rank + 1) // shard.world
    part = images[lo:hi] if isinstance(images, torch.Tensor) else Subset(images, range(lo, hi))
    device = next(net.parameters()).device
    bar = tqdm(total=len(part), desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    total, start = None, lo
    for batch in _batches(part, batch_size):
        f = net.features(batch.to(device)).double()
        if sink is not None:
            sink(start, f)
        start += len(f)
        stats = torch.cat([torch.tensor([len(f)], dtype=torch.float64, device=device), f.sum(0), (f.T @ f).flatten()])
        total = stats if total is None else total + stats
        bar.update(len(batch))
    bar.close()
    if total is None:  # an empty block (more ranks than images): zeros of the right size
        d = net.features(next(_batches(images, 1)).to(device)).shape[1]
        total = torch.zeros(1 + d + d * d, dtype=torch.float64, device=device)
    return total


def stats_and_features(
    net: nn.Module, images: torch.Tensor | Dataset, keep: int, batch_size: int = 500, progress: bool = False, desc: str = "features", shard: Shard = Shard()
) -> tuple[tuple[np.ndarray, np.ndarray], torch.Tensor]:
    """``feature_stats`` of all ``images`` and, in the same pass, the features (float32, CPU) of the
    first ``keep`` of them, gathered over ranks (for precision, recall, density and coverage)."""
    if len(images) < 2:
        raise HatrefineError(f"a Frechet distance needs at least 2 images, got {len(images)}")
    kept: list[tuple[int, torch.Tensor]] = []

    def sink(i: int, f: torch.Tensor) -> None:
        if i < keep:
            kept.append((i, f[: keep - i].float()))

    total = partial_stats(net, images, batch_size, progress and shard.main, desc, shard, sink)
    d = int(round((-1 + (1 + 4 * (len(total) - 1)) ** 0.5) / 2))
    block = torch.zeros(min(keep, len(images)), d, device=total.device)  # this rank's rows, zeros elsewhere: summing gathers
    for i, f in kept:
        block[i : i + len(f)] = f
    return stats_from_sums(shard.sum(total).cpu()), shard.sum(block).cpu()


def feature_stats(
    net: nn.Module, images: torch.Tensor | Dataset, batch_size: int = 500, progress: bool = False, desc: str = "features", shard: Shard = Shard()
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of ``net.features`` over ``images`` (a tensor, or a dataset of ``(image,)``).

    Under torchrun (``shard``) each rank reads its block and the statistics are summed over ranks."""
    if len(images) < 2:
        raise HatrefineError(f"a Frechet distance needs at least 2 images, got {len(images)}")
    total = partial_stats(net, images, batch_size, progress and shard.main, desc, shard)
    return stats_from_sums(shard.sum(total).cpu())


def stats_from_sums(total: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean, unbiased covariance) from the packed sums of ``partial_stats``."""
    n = total[0].item()
    d = int(round((-1 + (1 + 4 * (len(total) - 1)) ** 0.5) / 2))
    mu = total[1 : 1 + d] / n
    cov = (total[1 + d :].view(d, d) - n * torch.outer(mu, mu)) / (n - 1)
    return mu.numpy(), cov.numpy()


def frechet_distance(stats_a: tuple[np.ndarray, np.ndarray], stats_b: tuple[np.ndarray, np.ndarray]) -> float:
    """Frechet distance between two Gaussians given as (mean, covariance): pytorch-fid's formula.

    (A singular covariance, from fewer samples than feature dimensions, is handled there by
    an offset; its warning is silenced here.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) inside pytorch-fid
        warnings.simplefilter("ignore", RuntimeWarning)  # sqrtm on a degenerate covariance: handled below
        try:
            return float(calculate_frechet_distance(stats_a[0], stats_a[1], stats_b[0], stats_b[1]))
        except ValueError:  # sqrtm's imaginary residue on a degenerate covariance (collapsed samples)
            (mu1, s1), (mu2, s2) = stats_a, stats_b
            trace_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
            return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def classifier_fd(images: torch.Tensor, reference: torch.Tensor, net: nn.Module | None = None) -> float:
    """Frechet distance between two sets of images in the features of their shape's quick classifier
    (the LeNet for (N, 1, 32, 32) digits, the emoji classifier for (N, 3, 32, 32) colour images)."""
    shape = tuple(images.shape[1:])
    if shape not in QUICK_NETS or tuple(reference.shape[1:]) != shape:
        raise HatrefineError(
            f"the quick classifier distance works on (N, 1, 32, 32) or (N, 3, 32, 32) images, got {tuple(images.shape)}; use FID for other data"
        )
    net = net or load_classifier(shape)
    return frechet_distance(feature_stats(net, images), feature_stats(net, reference))


PRDC_REFERENCE = 5000  # reference images whose features are kept for precision, recall, density and coverage
PRDC_K = 5  # nearest neighbours for precision, recall, density and coverage (Naeem et al.'s default)


def check_set_size(n: int, what: str, fix: str) -> None:
    """FID needs a covariance and PRDC ``PRDC_K`` neighbours: at least ``PRDC_K + 1`` images per set."""
    if n < PRDC_K + 1:
        raise HatrefineError(f"{n} {what}: FID, precision and recall need at least {PRDC_K + 1}; {fix}")


def prdc(real: torch.Tensor | np.ndarray, fake: torch.Tensor | np.ndarray, k: int = PRDC_K) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` features against ``real`` ones (N, D), with k-NN balls."""
    from prdc import compute_prdc

    real, fake = (np.asarray(torch.as_tensor(f).double().cpu(), dtype=np.float32) for f in (real, fake))
    if min(len(real), len(fake)) <= k:
        raise HatrefineError(f"precision and recall with {k} neighbours need more than {k} images in each set, got {len(real)} and {len(fake)}")
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints the set sizes
        out = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
    return {name: float(v) for name, v in out.items()}


@torch.no_grad()
def features(net: nn.Module, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """``net.features`` of ``images``, in batches, on CPU."""
    device = next(net.parameters()).device
    return torch.cat([net.features(b.to(device)).float().cpu() for b in images.split(batch_size)])


def feature_scores(net: nn.Module, real: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """Frechet distance, precision, recall, density and coverage of ``images`` against ``real`` features."""
    fake = features(net, images).double().numpy()
    ref = real.double().numpy()
    fd = frechet_distance((ref.mean(0), np.cov(ref, rowvar=False)), (fake.mean(0), np.cov(fake, rowvar=False)))
    return {"fd": round(fd, 4), **{k: round(v, 4) for k, v in prdc(real, torch.from_numpy(fake)).items()}}


@torch.no_grad()
def class_probabilities(images: torch.Tensor, net: LeNet | None = None) -> torch.Tensor:
    """A shipped quick classifier's class probabilities (N, 10) (default: the LeNet's, of (N, 1, 32, 32) digits)."""
    net = net or load_classifier(images.shape[1:])
    device = next(net.parameters()).device
    return torch.cat([net(b.to(device)).softmax(1).cpu() for b in images.split(500)])


SURE = 0.9  # LeNet "is sure of" a digit when its top class probability is at least this


def class_changes(before: torch.Tensor, after: torch.Tensor, sure: float = SURE) -> dict:
    """Which digits change LeNet label between class probabilities ``before`` and ``after`` (N, 10):
    the share of all, of those LeNet was ``sure`` of before, of the others, and the share of the
    changes that started from a digit it was not sure of (None where a group is empty)."""
    changed, confident = before.argmax(1) != after.argmax(1), before.max(1).values >= sure
    share = lambda mask: round(changed[mask].double().mean().item(), 4) if mask.any() else None
    return {
        "class_changed": share(torch.ones_like(changed)),
        "class_changed_if_sure": share(confident),
        "class_changed_if_unsure": share(~confident),
        "changes_from_unsure": round((changed & ~confident).sum().item() / changed.sum().item(), 4) if changed.any() else None,
    }


def class_histogram(probs: torch.Tensor) -> dict:
    """The labels of class probabilities ``probs`` (N, 10) (``class_probabilities``): frequency of each class, label entropy (nats), mean confidence."""
    freq = torch.bincount(probs.argmax(1), minlength=10).double() / len(probs)
    entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum()
    return {
        "frequencies": [round(v, 4) for v in freq.tolist()],
        "label_entropy": round(entropy.item(), 4),
        "confidence": round(probs.max(1).values.mean().item(), 4),
    }


def cache_dir() -> Path:
    """Where reference statistics are cached: ``$HATREFINE_CACHE`` or ``~/.cache/hatrefine``, then ``fid/``."""
    return cache_root() / "fid"


def _data_fingerprint(data: str) -> Optional[list]:
    """Size and modification time of a local data file or folder, so an edited file is not served stale stats."""
    path = Path(data)
    if path.is_file():
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [str(path.resolve()), len(files), max((p.stat().st_mtime_ns for p in files), default=0)]
    return None


def reference_stats(
    data: str,
    image_shape: Sequence[int],
    inception: InceptionFeatures,
    split: str = "train",
    n: Optional[int] = None,
    data_root: Optional[str] = None,
    batch_size: int = 100,
    progress: bool = True,
    cache: Optional[Path] = None,
    shard: Shard = Shard(),
) -> tuple[tuple[np.ndarray, np.ndarray], int, bool, torch.Tensor]:
    """Inception statistics of the first ``n`` images (all if None) of a data spec, fitted to ``image_shape``.

    Returns ``((mean, cov), number of images, whether they came from the cache, the features of
    the first PRDC_REFERENCE images)``. Under torchrun the ranks share the work and rank 0 writes the cache.
    """
    key = {
        "data": data,
        "split": split,
        "n": n,
        "shape": list(image_shape),
        "inception": inception.source,
        "file": _data_fingerprint(data),
        "kept": PRDC_REFERENCE,
    }
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = (cache or cache_dir()) / f"{re.sub(r'[^A-Za-z0-9]+', '_', Path(data).name or data)}-{split}-{digest}.safetensors"
    if path.is_file():
        stats = read_state_dict(path)
        return (stats["mu"].numpy(), stats["sigma"].numpy()), int(stats["n"]), True, stats["features"]
    dataset = open_dataset(data, image_shape, split=split, root=data_root, limit=n)
    check_set_size(len(dataset), f"reference images in {data} ({split})", "point --data at a larger set or raise --n-ref")
    if progress and shard.main:  # say up front what the first call costs: minutes on a CPU
        on_cpu = next(inception.parameters(), torch.empty(0)).device.type == "cpu"
        cost = f", about {max(1, round(len(dataset) / 8 / 60))} min on 2 CPU cores" if on_cpu else ""
        print(
            f"reference statistics of {data} ({split}) are not cached yet: extracting the Inception features of {len(dataset)} images once{cost} "
            f"(--n-ref N uses fewer); cached in {path}",
            file=sys.stderr,
            flush=True,
        )
    (mu, sigma), kept = stats_and_features(
        inception, dataset, PRDC_REFERENCE, batch_size, progress, desc=f"Inception features of {data} ({split})", shard=shard
    )
    if shard.main:
        save_tensors(path, {"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma), "n": torch.tensor(len(dataset)), "features": kept})
    return (mu, sigma), len(dataset), False, kept


def fid(
    samples: torch.Tensor,
    data: str,
    inception: InceptionFeatures,
    split: str = "train",
    n_reference: Optional[int] = None,
    data_root: Optional[str] = None,
    batch_size: int = 100,
    progress: bool = True,
    cache: Optional[Path] = None,
    shard: Shard = Shard(),
) -> dict:
    """FID between ``samples`` (N, C, H, W) in [-1, 1] and a data spec; the data are fitted to the samples' shape.

    Under torchrun (``shard``) each rank extracts the features of its block of images.

    Returns ``fid``, ``precision``, ``recall``, ``density``, ``coverage`` (against the first
    PRDC_REFERENCE reference images, ``n_prdc_reference``), ``n_samples``, ``n_reference``,
    ``split``, ``data``, ``inception`` and ``reference_cached``.
    """
    if samples.dim() != 4:
        raise HatrefineError(f"samples must be (N, C, H, W) images, got shape {tuple(samples.shape)}")
    check_set_size(len(samples), "sample images", "pass a file with more samples")
    ref, n_ref, cached, ref_features = reference_stats(data, samples.shape[1:], inception, split, n_reference, data_root, batch_size, progress, cache, shard)
    stats, sample_features = stats_and_features(inception, samples, len(samples), batch_size, progress, desc="Inception features of the samples", shard=shard)
    return {
        "fid": frechet_distance(stats, ref),
        **prdc(ref_features, sample_features),
        "n_prdc_reference": len(ref_features),
        "n_samples": len(samples),
        "n_reference": n_ref,
        "data": data,
        "split": split,
        "inception": inception.source,
        "reference_cached": cached,
    }
