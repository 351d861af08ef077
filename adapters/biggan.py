"""``biggan:deep-128``, ``biggan:deep-256``, ``biggan:deep-512``: BigGAN-deep, through pytorch-pretrained-biggan.

Options in brackets: ``class=N`` (the ImageNet class, fixed for the run) and ``truncation=T``
(in (0, 1], default 1), e.g. ``biggan:deep-128[class=207,truncation=0.4]``. Without ``class``,
each sample's class is drawn uniformly and held along its chain: the latent is then the noise
followed by a one-hot class (``Generator(classes=1000)``), which samplers and inversion never move.

BigGAN's noise is ``T * u`` with u ~ TruncNormal(-2, 2); hatrefine's core assumes a N(0, I)
latent. The adapter reparametrises exactly: hatrefine's latent w ~ N(0, I) becomes
``u = Phi^-1(Phi(-2) + (Phi(2) - Phi(-2)) Phi(w))`` (``truncated_normal``), so w ~ N(0, I)
gives u ~ TruncNormal(-2, 2), and the Langevin prior ||w||^2 / 2 is the truncated prior. The
truncation also goes to the model, which picks its batch-norm statistics by it.

The weights: ``--checkpoint DIR`` (the library's layout, ``pytorch_model.bin`` + ``config.json``,
or the weights file with ``config.json`` beside it), else the library's own cache
(``$PYTORCH_PRETRAINED_BIGGAN_CACHE``, default ``~/.pytorch_pretrained_biggan``), downloaded
into it once when online (``HATREFINE_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` forbid it). Files
are read with ``weights_only=True`` and strict key matching.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.files.cache import offline
from hatrefine.files.checkpoint import load_strict, read_state_dict
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, register_scheme, spec_options

INSTALL = "pip install 'hatrefine[biggan]'"
MODELS = {"deep-128": 128, "deep-256": 256, "deep-512": 512}
OPTIONS = {"class": int, "truncation": float}
HOW = "pass --checkpoint DIR (pytorch_model.bin + config.json)"
PHI_MINUS_2 = 0.5 * math.erfc(math.sqrt(2.0))  # Phi(-2), the truncated normal's lower tail


def truncated_normal(w: torch.Tensor) -> torch.Tensor:
    """N(0, 1) -> TruncNormal(-2, 2) by the inverse CDF, elementwise; each half computed where Phi is precise."""
    w64 = w.double()
    neg = torch.special.ndtri(PHI_MINUS_2 + (1 - 2 * PHI_MINUS_2) * torch.special.ndtr(-w64.abs()))  # u(-|w|) = -u(|w|)
    return torch.where(w64 > 0, -neg, neg).to(w.dtype)


class BigGANDecoder(nn.Module):
    """BigGAN-deep at one truncation, fed hatrefine's N(0, I) latent (``truncated_normal``): for
    ``class_index`` alone, or (None) for the one-hot class that ends each latent."""

    def __init__(self, model: nn.Module, class_index: Optional[int], truncation: float):
        super().__init__()
        self.model, self.truncation = model, truncation
        label = torch.zeros(1, model.config.num_classes)
        if class_index is not None:
            label[0, class_index] = 1.0
        self.per_sample = class_index is None
        self.register_buffer("label", label)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.per_sample:
            w, label = w[:, : -self.label.shape[1]], w[:, -self.label.shape[1] :]
        else:
            label = self.label.expand(len(w), -1)
        return self.model(self.truncation * truncated_normal(w), label, self.truncation)


def _cached(spec: str, url: str) -> Path:
    """The library's copy of ``url`` (its cache notes each file's url beside it), downloaded by it when missing."""
    from pytorch_pretrained_biggan import file_utils

    cache = Path(file_utils.PYTORCH_PRETRAINED_BIGGAN_CACHE)
    for note in sorted(cache.glob("*.json")) if cache.is_dir() else []:
        try:
            meta = json.loads(note.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("url") == url and note.with_suffix("").is_file():
            return note.with_suffix("")
    if offline():
        raise HatrefineError(f"{spec}: the BigGAN weights are not in {cache} and downloads are off (HATREFINE_OFFLINE/HF_HUB_OFFLINE); {HOW}")
    try:
        return Path(file_utils.cached_path(url))
    except OSError as e:  # requests' errors are OSErrors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise HatrefineError(f"{spec}: the BigGAN weights could not be downloaded ({first}); {HOW}") from None


def _files(spec: str, name: str, checkpoint: Optional[str]) -> tuple[Path, Path]:
    """(weights, config.json) of ``name``: from ``checkpoint`` or the library's cache."""
    from pytorch_pretrained_biggan import model as library

    if checkpoint is None:
        key = f"biggan-{name}"
        return _cached(spec, library.PRETRAINED_MODEL_ARCHIVE_MAP[key]), _cached(spec, library.PRETRAINED_CONFIG_ARCHIVE_MAP[key])
    path = Path(checkpoint)
    weights, config = (path / library.WEIGHTS_NAME, path / library.CONFIG_NAME) if path.is_dir() else (path, path.parent / library.CONFIG_NAME)
    if not config.is_file():
        raise HatrefineError(f"--checkpoint {checkpoint}: no {config.name} beside the weights; {HOW}")
    return weights, config


def _generator(name: str, checkpoint: Optional[str]) -> Generator:
    spec = f"biggan:{name}"
    base, opts = spec_options("biggan", name, OPTIONS)
    try:
        from pytorch_pretrained_biggan import BigGAN, BigGANConfig
    except ImportError:
        raise HatrefineError(f"{spec} needs the pytorch-pretrained-biggan package; {INSTALL}") from None
    truncation = opts.get("truncation", 1.0)
    if not 0 < truncation <= 1:
        raise HatrefineError(f"{spec}: truncation must be in (0, 1], got {truncation}")
    weights, config_path = _files(spec, base, checkpoint)
    config = BigGANConfig.from_json_file(str(config_path))
    size = 4 * 2 ** sum(bool(layer[0]) for layer in config.layers)
    if size != MODELS[base]:
        raise HatrefineError(f"{weights} is a BigGAN of {size}x{size} images, not {base}; use the checkpoint that matches the spec")
    class_index = opts.get("class")
    if class_index is not None and not 0 <= class_index < config.num_classes:
        raise HatrefineError(f"{spec}: class must be in 0-{config.num_classes - 1}, got {class_index}")
    model = BigGAN(config)
    load_strict(model, read_state_dict(weights), str(weights))
    classes = config.num_classes if class_index is None else 0
    return Generator(
        BigGANDecoder(model, class_index, truncation),
        latent_shape=(config.z_dim + classes,),
        image_shape=(3, size, size),
        prior="normal",
        name=spec,
        classes=classes,
    )


register_scheme("biggan", Scheme(_generator, names=list(MODELS), options="[class=N,truncation=T]", extra="biggan"))
