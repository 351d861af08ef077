"""Data: the one place that turns a data spec into image batches in a generator's shape.

Specs:
  ``builtin:mnist``        the embedded 5,000-digit MNIST subset shipped with hatrefine
  ``builtin:twemoji``      the embedded 3,786 Twitter emoji, 3x32x32 colour on white (Twemoji by Twitter,
                           Inc. and other contributors, CC-BY 4.0, from emoji-datasource-twitter 16.0.0)
  ``cifar10``, ``mnist``, ``svhn``, ``celeba`` (or ``torchvision:NAME``)
                           torchvision datasets, downloaded into ``--data-root`` when online
  ``PATH.npz``             an array ``x`` (or ``images``): uint8 in [0, 255] or float in [-1, 1];
                           NHW, NHWC or NCHW
  ``DIR``                  a folder of images (searched recursively)
                           (these two hold out every tenth image as their ``test`` split)
  ``sklearn:digits``       scikit-learn's 1,797 8x8 digits (needs scikit-learn), upscaled
  ``noise:gaussian``, ``noise:uniform``
                           1,000 seeded noise images (N(0, 0.5^2) clipped, or U(-1, 1))
  ``invert:SPEC``          the images of SPEC, negated (white digits become black)

The last three are offline out-of-distribution sets for ``hatrefine ood``.

Every source yields float32 (N, C, H, W) in [-1, 1], resized and converted to the
requested (C, H, W).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from hatrefine.errors import HatrefineError, HatrefineWarning

TORCHVISION_DATASETS = ("cifar10", "mnist", "svhn", "celeba")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def default_data_root() -> Path:
    return Path(os.environ.get("HATREFINE_DATA", Path.home() / ".cache" / "hatrefine" / "data"))


def embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The embedded MNIST subset: ``x`` uint8 (5000, 28, 28) and labels ``y`` (500 per digit)."""
    with resources.as_file(resources.files("hatrefine") / "assets" / "mnist5k.npz") as path:
        with np.load(path) as f:
            return f["x"], f["y"]


def embedded_twemoji() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The embedded Twemoji set: ``x`` uint8 (3786, 3, 32, 32) composited on white, its category index
    ``y``, short ``names`` (a skin-tone variant carries its code, e.g. ``_1F3FB``) and the ten ``categories``.

    Twemoji graphics by Twitter, Inc. and other contributors, CC-BY 4.0 (https://creativecommons.org/licenses/by/4.0/),
    taken from the npm package emoji-datasource-twitter 16.0.0 and resized to 32x32 with Lanczos."""
    with resources.as_file(resources.files("hatrefine") / "assets" / "twemoji32.npz") as path:
        with np.load(path) as f:
            return f["x"], f["y"], f["names"], f["categories"]


def twemoji_split(names: np.ndarray, split: str) -> np.ndarray:
    """Which emoji form ``split``: ``test`` every tenth emoji with all its skin-tone variants (so no
    variant of a held-out emoji is trained on), ``train`` the rest."""
    groups = {}
    index = np.array([groups.setdefault(str(n).split("_1F3F")[0], len(groups)) for n in names])
    return index % 10 == 9 if split == "test" else index % 10 != 9


def embedded_split(labels: np.ndarray, split: str) -> np.ndarray:
    """Which of the embedded digits form ``split``: ``train`` the first 450 of each class, ``test`` the other 50."""
    rank = np.zeros(len(labels), dtype=int)  # position of each image within its class
    for digit in np.unique(labels):
        idx = np.flatnonzero(labels == digit)
        rank[idx] = np.arange(len(idx))
    return rank < 450 if split == "train" else rank >= 450


def parse_value_range(text: Optional[str]) -> Optional[tuple[float, float]]:
    """``"0,1"`` -> (0.0, 1.0) for ``--value-range``; None stays None."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise HatrefineError(f"--value-range {text!r} is not LOW,HIGH (e.g. 0,1 or 0,255 or -1,1)") from None
    if not hi > lo:
        raise HatrefineError(f"--value-range {text!r}: HIGH must be above LOW")
    return lo, hi


def to_unit_range(
    x: torch.Tensor, what: str, value_range: Optional[tuple[float, float]] = None, flag: Optional[str] = "--value-range", slack: float = 1e-3
) -> torch.Tensor:
    """Images mapped from ``value_range`` onto hatrefine's [-1, 1] (None: they must already be in
    it, give or take ``slack``: refined samples G(z) + Y may overshoot a little).
    ``flag``: the option that declares the range, named in the messages (None: data files, which have none).

    One-line errors for NaN or inf pixels (how many, in which images) and for values outside the
    range (8-bit levels get the exact mapping); a warning when nothing was declared and every
    value lies in [0, 1], the usual convention outside GAN code, which [-1, 1] would read as dark images."""
    if x.numel() == 0:
        raise HatrefineError(f"{what} are empty (shape {tuple(x.shape)}); pass a file that holds images")
    bad = ~torch.isfinite(x)
    if bad.any():
        images = bad.flatten(1).any(dim=1).nonzero().flatten().tolist()
        listed = ", ".join(map(str, images[:5])) + (f" (+{len(images) - 5} more)" if len(images) > 5 else "")
        raise HatrefineError(
            f"{what} hold {int(bad.sum())} NaN or inf values, in {len(images)} of {len(x)} images (index {listed}); repair or drop those images"
        )
    lo, hi = float(x.min()), float(x.max())
    if value_range is not None:
        a, b = value_range
        if lo < a - 1e-3 * (b - a) or hi > b + 1e-3 * (b - a):
            raise HatrefineError(f"{what} have values in [{lo:.4g}, {hi:.4g}], outside the declared {flag} {a:g},{b:g}; declare the range they are in")
        return ((x - a) * (2.0 / (b - a)) - 1.0).clamp_(-1.0, 1.0)
    if lo < -1 - slack or hi > 1 + slack:
        if lo >= 0 and hi <= 255 and bool((x == x.round()).all()):
            fix = "they look like 8-bit levels: map them with x / 127.5 - 1, " + (f"or pass {flag} 0,255" if flag else "or save them as uint8")
        else:
            fix = "rescale them to [-1, 1]" + (f" or pass {flag} LOW,HIGH" if flag else "")
        raise HatrefineError(f"{what} have values in [{lo:.4g}, {hi:.4g}]; hatrefine expects [-1, 1]: {fix}")
    if lo >= 0 and hi > 0:
        fix = f"pass {flag} 0,1 to map them, or {flag} -1,1 if [-1, 1] is meant" if flag else "map them with x * 2 - 1 (or save them as uint8)"
        warnings.warn(
            f"{what} all lie in [0, 1] ([{lo:.3g}, {hi:.3g}]): if they are [0, 1] images they will be read as dark [-1, 1] images; {fix}",
            HatrefineWarning,
            stacklevel=2,
        )
    return x


def as_tensor(value, what: str) -> torch.Tensor:
    """A tensor from a tensor or a numpy array (the Python API takes both); anything else, one line."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise HatrefineError(f"{what} must be a torch.Tensor or a numpy array, got {type(value).__name__}")
    return value


def to_tensor(images: np.ndarray | torch.Tensor, what: str = "images") -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] arrays (NHW, NHWC or NCHW) -> float32 NCHW in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif channels_last(x):
        x = x.permute(0, 3, 1, 2)
    elif x.dim() != 4:
        raise HatrefineError(f"images have shape {tuple(x.shape)}; expected NHW, NHWC or NCHW")
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0).contiguous()
    return to_unit_range(x.float(), what, flag=None, slack=0.5).contiguous()  # data may carry some noise


def center_crop_to_aspect(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The largest centred crop of ``x`` (N, C, H', W') with the aspect ratio of h x w: the Hat EBM
    authors' preprocessing (CelebA's 178 x 218 photos become their centre 178 x 178 before resizing)."""
    H, W = x.shape[2:]
    if H * w > W * h:  # too tall
        keep = round(W * h / w)
        return x[:, :, (H - keep) // 2 : (H - keep) // 2 + keep]
    if W * h > H * w:  # too wide
        keep = round(H * w / h)
        return x[:, :, :, (W - keep) // 2 : (W - keep) // 2 + keep]
    return x


def fit_to_shape(x: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Convert channels (gray <-> RGB, drop alpha), crop the centre to the target's aspect ratio
    and resize (bilinear, antialiased) to (C, H, W)."""
    c, h, w = image_shape
    if x.shape[1] == 4:
        x = x[:, :3]
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise HatrefineError(f"cannot convert {x.shape[1]}-channel images to {c} channels")
    if tuple(x.shape[2:]) != (h, w):
        x = center_crop_to_aspect(x, h, w)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(-1, 1)
    return x.contiguous()


def channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-d image batch is (N, H, W, C): its last size is 1, 3 or 4 channels and its second is not."""
    return x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4)


def images_for(
    x: torch.Tensor, image_shape: Sequence[int], what: str, value_range: Optional[tuple[float, float]] = None, convert: bool = True
) -> tuple[torch.Tensor, list[str]]:
    """Images from a file, made ready for a generator of ``image_shape`` (in [-1, 1]): channels-last batches
    transposed, ``value_range`` mapped onto [-1, 1], and other sizes or channel counts converted as
    ``fit --data`` converts them (``fit_to_shape``) unless ``convert`` is False (then a one-line error).
    Returns the images and notes on what was done, for the user."""
    notes = []
    if channels_last(x):
        notes.append(f"{what} are channels-last {tuple(x.shape)}: read as (N, H, W, C)")
        x = x.permute(0, 3, 1, 2)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise HatrefineError(f"{what} have shape {tuple(x.shape)}; expected images (N, C, H, W), (N, H, W, C) or (N, H, W)")
    if value_range is not None:
        x = to_unit_range(x.float(), what, value_range)
    if tuple(x.shape[1:]) == tuple(image_shape):
        return x, notes
    got, want = "x".join(map(str, x.shape[1:])), "x".join(map(str, image_shape))
    if not convert:
        raise HatrefineError(f"{what} are {got} (C x H x W) and the generator makes {want}; leave out --no-resize to convert them as fit --data does")
    x = fit_to_shape(to_unit_range(x.float(), what), image_shape)
    notes.append(f"{what} converted from {got} to {want} as fit --data does (--no-resize refuses instead)")
    return x, notes


def load_folder(path: str | Path, image_shape: Sequence[int], convert: bool = True) -> torch.Tensor:
    """Every image in a folder (recursively, sorted by path), each fitted to ``image_shape`` as ``fit --data``
    reads a folder, or, with ``convert`` False, a one-line error for the first of another size."""
    out = []
    for f in _image_files(Path(path)):
        x = _read_image(f)
        if not convert and tuple(x.shape[2:]) != tuple(image_shape[1:]):
            raise HatrefineError(
                f"{f} is {x.shape[2]}x{x.shape[3]} pixels and the generator makes {image_shape[1]}x{image_shape[2]}; leave out --no-resize to convert it as fit --data does"
            )
        out.append(fit_to_shape(x, image_shape))
    return torch.cat(out)


def held_out(x: torch.Tensor, split: str) -> torch.Tensor:
    """The ``test`` split of a data set without one: every tenth image (indices 9, 19, ...); ``train``: the rest.

    A set of fewer than 10 images has no held-out part: both splits are the whole set."""
    if len(x) < 10:
        return x
    test = torch.arange(len(x)) % 10 == 9
    return x[test] if split == "test" else x[~test]


def _load_npz(path: Path) -> torch.Tensor:
    try:
        with np.load(path) as f:
            key = next((k for k in ("x", "images") if k in f.files), None)
            if key is None:
                raise HatrefineError(f"{path} has arrays {f.files}; put the images under the key 'x'")
            return to_tensor(f[key], f"images in {path}")
    except HatrefineError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise HatrefineError(f"{path} is not a readable .npz file ({e}); re-create it with numpy.savez") from None


CROPS = ("center", "random")  # how images of another size are fitted: the centre, or a random square (the authors' ImageNet)


def memory_cap() -> int:
    """Bytes a data set may take in memory before it is streamed from disk (``HATREFINE_DATA_MEMORY_MB``, default 2048)."""
    return int(float(os.environ.get("HATREFINE_DATA_MEMORY_MB", 2048)) * 2**20)


def _image_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise HatrefineError(f"{path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); point --data at a folder of images")
    return files


def _read_image(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        return to_tensor(np.array(im.convert("RGB"))[None])


def random_square(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """The authors' random crop: the shorter side resized to ``size`` (antialiased), then a random
    ``size`` x ``size`` window (x is (1, C, H, W) in [-1, 1])."""
    H, W = x.shape[2:]
    scale = size / min(H, W)
    h, w = max(size, round(H * scale)), max(size, round(W * scale))
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(-1, 1)
    top, left = (int(torch.randint(n - size + 1, (1,), generator=generator)) for n in (h, w))
    return x[:, :, top : top + size, left : left + size]


class ImageFolder(Dataset):
    """A folder of images read from disk one at a time (bounded memory), each fitted to ``image_shape``:
    centre-cropped and resized, or (``crop="random"``) a random square window, different every epoch
    and fixed by (seed, epoch, index), so that a resumed fit sees the same crops."""

    def __init__(self, files: list[Path], image_shape: Sequence[int], crop: str = "center", seed: int = 0):
        self.files, self.image_shape, self.crop, self.seed, self.epoch = files, tuple(image_shape), crop, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        x = _read_image(self.files[i])
        c, h, w = self.image_shape
        if self.crop == "random" and h == w:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
            x = random_square(x, h, g)
        return (fit_to_shape(x, self.image_shape)[0],)


def _open_folder(path: Path, image_shape: Sequence[int], split: str, crop: str) -> Dataset:
    """A folder in memory when it fits under ``memory_cap`` and is centre-cropped, else streamed from disk."""
    files = _image_files(path)
    if len(files) >= 10:
        files = [f for k, f in enumerate(files) if (k % 10 == 9) == (split == "test")]  # the split ``held_out`` makes
    if crop == "random" or len(files) * int(np.prod(image_shape)) * 4 > memory_cap():
        return ImageFolder(files, image_shape, crop)
    return TensorDataset(torch.cat([fit_to_shape(_read_image(f), image_shape) for f in files]))


def _torchvision_dataset(name: str, split: str, root: Path, download: bool) -> Dataset:
    import torchvision.datasets as tvd

    train = split == "train"
    try:
        if name == "cifar10":
            return tvd.CIFAR10(root, train=train, download=download)
        if name == "mnist":
            return tvd.MNIST(root, train=train, download=download)
        if name == "svhn":
            return tvd.SVHN(root, split="train" if train else "test", download=download)
        return tvd.CelebA(root, split="train" if train else "test", download=download)
    except (RuntimeError, OSError) as e:
        if Path(root).is_dir() and any(Path(root).iterdir()):  # files are there: torchvision's checksum refused them
            raise HatrefineError(
                f"dataset {name!r} in {root} is corrupted or incomplete (it fails torchvision's checksum: {str(e).splitlines()[0]}); "
                f"delete {root} and download it again, or pass --data-root where a complete copy is"
            ) from None
        raise HatrefineError(
            f"dataset {name!r} is not in {root} and could not be downloaded ({str(e).splitlines()[0]}); "
            f"connect to the internet once, or pass --data-root where it is stored"
        ) from None


class _ConvertedDataset(Dataset):
    """Wraps a torchvision dataset of PIL images; converts each to the requested shape."""

    def __init__(self, base: Dataset, image_shape: Sequence[int]):
        self.base, self.image_shape = base, tuple(image_shape)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        img = self.base[i][0]
        x = to_tensor(np.asarray(img.convert("RGB"))[None])
        return (fit_to_shape(x, self.image_shape)[0],)


def open_dataset(
    spec: str,
    image_shape: Sequence[int],
    split: str = "train",
    root: Optional[str | Path] = None,
    download: bool = True,
    limit: Optional[int] = None,
    crop: str = "center",
) -> Dataset:
    """Open a data spec as a dataset of ``(image,)`` items, each (C, H, W) float32 in [-1, 1].

    ``split`` is ``train`` or ``test``; the embedded MNIST subset holds out its last 50
    digits of each class as ``test``, a .npz file or an image folder every tenth image
    (``held_out``). ``limit`` keeps the first N images. A folder is read into memory when it fits
    under ``memory_cap()``, else streamed from disk; ``crop="random"`` takes a random square window
    of each folder image, as the authors' ImageNet training (``ImageFolder``).
    """
    if crop not in CROPS:
        raise HatrefineError(f"unknown crop {crop!r}; use {' or '.join(CROPS)}")
    if split not in ("train", "test"):
        raise HatrefineError(f"unknown split {split!r}; use 'train' or 'test'")
    if limit is not None and limit <= 0:
        raise HatrefineError(f"--n / limit must be positive, got {limit}")
    name = spec.lower().removeprefix("torchvision:")
    if spec.startswith("invert:"):
        return TensorDataset(-load_images(spec[7:], image_shape, split=split, root=root, download=download, limit=limit))
    if spec in ("builtin:mnist", "mnist5k"):
        images, labels = embedded_mnist()
        x = fit_to_shape(to_tensor(images[embedded_split(labels, split)]), image_shape)
    elif spec == "builtin:twemoji":
        images, _, names, _ = embedded_twemoji()
        x = fit_to_shape(to_tensor(images[twemoji_split(names, split)]), image_shape)
    elif name in TORCHVISION_DATASETS:
        base = _torchvision_dataset(name, split, Path(root) if root else default_data_root() / name, download)
        ds = _ConvertedDataset(base, image_shape)
        return torch.utils.data.Subset(ds, range(min(limit, len(ds)))) if limit else ds
    elif spec in ("noise:gaussian", "noise:uniform"):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        shape = (limit or 1000, *image_shape)
        x = (0.5 * torch.randn(shape, generator=g)).clamp_(-1, 1) if spec.endswith("gaussian") else torch.rand(shape, generator=g) * 2 - 1
    elif spec == "sklearn:digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise HatrefineError("sklearn:digits needs scikit-learn; pip install scikit-learn") from None
        digits = torch.as_tensor(load_digits().images, dtype=torch.float32)  # (1797, 8, 8) in [0, 16]
        x = fit_to_shape((digits / 8.0 - 1.0).unsqueeze(1), image_shape)
    elif spec.endswith(".npz"):
        path = Path(spec)
        if not path.is_file():
            raise HatrefineError(f"data file {spec} does not exist; pass an existing .npz with an array 'x'")
        x = held_out(fit_to_shape(_load_npz(path), image_shape), split)
    elif Path(spec).is_dir():
        ds = _open_folder(Path(spec), image_shape, split, crop)
        return torch.utils.data.Subset(ds, range(min(limit, len(ds)))) if limit else ds
    else:
        raise HatrefineError(
            f"unknown data spec {spec!r}; use builtin:mnist, builtin:twemoji, one of {', '.join(TORCHVISION_DATASETS)}, "
            f"a .npz file, a folder of images, sklearn:digits, noise:gaussian, noise:uniform or invert:SPEC"
        )
    if limit is not None:
        x = x[:limit]
    return TensorDataset(x)


def load_images(spec: str, image_shape: Sequence[int], **kwargs) -> torch.Tensor:
    """Load a whole data spec into memory as one (N, C, H, W) tensor (see ``open_dataset``)."""
    ds = open_dataset(spec, image_shape, **kwargs)
    if isinstance(ds, TensorDataset):
        return ds.tensors[0]
    return torch.stack([ds[i][0] for i in range(len(ds))])


class DataStream:
    """Shuffled data batches addressed by step number: batch ``k`` depends only on
    (seed, k), so a resumed run sees exactly the batches an uninterrupted one would."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int):
        if batch_size <= 0:
            raise HatrefineError(f"batch size must be positive, got {batch_size}")
        if len(dataset) == 0:
            raise HatrefineError("the dataset is empty; point --data at images")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.per_epoch = max(1, len(dataset) // batch_size)
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        """The dataset indices of batch ``step``."""
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(len(self.dataset), generator=g)
        return self._perm[pos * self.batch_size : (pos + 1) * self.batch_size]

    def batch(self, step: int) -> torch.Tensor:
        idx = self.indices(step)
        base = self.dataset.dataset if isinstance(self.dataset, torch.utils.data.Subset) else self.dataset
        if hasattr(base, "set_epoch"):  # random crops that differ by epoch, fixed by it
            base.set_epoch(self._epoch)
        if isinstance(self.dataset, TensorDataset):
            return self.dataset.tensors[0][idx]
        return torch.stack([self.dataset[int(i)][0] for i in idx])
