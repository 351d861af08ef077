"""Generators stored as a directory (``config.json`` + ``model.safetensors``), locally or on the Hub.

Layout (``discriminator`` is optional)::

    config.json            {"generator": {"architecture", "kwargs", "latent_shape", "image_shape",
                                          "prior", "value_range"},
                            "discriminator": {"architecture", "kwargs"}}
    model.safetensors      generator weights
    discriminator.safetensors

``hf:ORG/NAME`` downloads such a repository with huggingface_hub (which honours
``HF_HUB_OFFLINE`` and its cache); ``hf:PATH`` with a local directory reads it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.files.checkpoint import load_strict, read_state_dict, save_tensors
from hatrefine.files.jsonfiles import read_json, save_json
from hatrefine.files.names import CONFIG, DISCRIMINATOR_WEIGHTS, MODEL_WEIGHTS
from hatrefine.files.schema import FORMAT_VERSION, check_fields, check_version
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, create_architecture, register_scheme


def resolve_hub_dir(repo: str, allow_patterns: Optional[list[str]] = None) -> Path:
    """A local directory for ``repo``: the directory itself if it exists, else a Hub snapshot."""
    if Path(repo).is_dir():
        return Path(repo)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id=repo, allow_patterns=allow_patterns))
    except HFValidationError:
        raise HatrefineError(f"{repo!r} is neither a local directory nor a Hub repository id (ORG/NAME)") from None
    except RepositoryNotFoundError:
        raise HatrefineError(f"Hub repository {repo} does not exist or is private; check the name or log in with `hf auth login`") from None
    except LocalEntryNotFoundError:
        raise HatrefineError(
            f"Hub repository {repo} is not in the local cache and the Hub cannot be reached; go online once (unset HF_HUB_OFFLINE) or pass a local directory"
        ) from None


def _build(entry: dict, weights: Path, source: str) -> nn.Module:
    module = create_architecture(entry["architecture"], **entry.get("kwargs", {}))
    load_strict(module, read_state_dict(weights), source)
    return module


GENERATOR_FIELDS = {"architecture": str, "kwargs": dict, "latent_shape": list, "image_shape": list, "prior": str, "value_range": list}


def load_generator_dir(directory: str | Path, name: Optional[str] = None) -> Generator:
    """Build the frozen generator saved in ``directory``."""
    directory = Path(directory)
    source = str(directory / CONFIG)
    cfg = read_json(directory / CONFIG)
    check_version(cfg, source)
    if "generator" not in cfg:
        raise HatrefineError(f"{source} has no 'generator' entry; save it with save_generator_dir")
    g = cfg["generator"]
    check_fields(g, GENERATOR_FIELDS, f"{source} (generator)", optional=("kwargs", "prior", "value_range"), nullable=("prior", "value_range"))
    module = _build(g, directory / MODEL_WEIGHTS, str(directory / MODEL_WEIGHTS))
    return Generator(
        module,
        latent_shape=g["latent_shape"],
        image_shape=g["image_shape"],
        prior=g.get("prior", "normal"),
        value_range=None if g.get("value_range") is None else tuple(g["value_range"]),
        name=name or str(directory),
    )


def load_discriminator_dir(directory: str | Path) -> nn.Module:
    """Build the discriminator saved beside a generator in ``directory``."""
    directory = Path(directory)
    cfg = read_json(directory / CONFIG)
    if "discriminator" not in cfg:
        raise HatrefineError(f"{directory} holds no discriminator; pass one with --discriminator")
    return _build(cfg["discriminator"], directory / DISCRIMINATOR_WEIGHTS, str(directory / DISCRIMINATOR_WEIGHTS))


def save_generator_dir(
    directory: str | Path,
    generator: nn.Module,
    architecture: str,
    kwargs: dict,
    latent_shape,
    image_shape,
    prior: Optional[str] = "normal",
    value_range=(-1.0, 1.0),
    discriminator: Optional[tuple[nn.Module, str, dict]] = None,
) -> None:
    """Write a generator (and optionally ``(module, architecture, kwargs)`` of its discriminator)."""
    directory = Path(directory)
    cfg = {
        "format_version": FORMAT_VERSION,
        "generator": {
            "architecture": architecture,
            "kwargs": kwargs,
            "latent_shape": list(latent_shape),
            "image_shape": list(image_shape),
            "prior": prior,
            "value_range": None if value_range is None else list(value_range),
        },
    }
    save_tensors(directory / MODEL_WEIGHTS, generator.state_dict())
    if discriminator is not None:
        d, d_arch, d_kwargs = discriminator
        cfg["discriminator"] = {"architecture": d_arch, "kwargs": d_kwargs}
        save_tensors(directory / DISCRIMINATOR_WEIGHTS, d.state_dict())
    save_json(directory / CONFIG, cfg)


def _hub_generator(repo: str, checkpoint: Optional[str]) -> Generator:
    return load_generator_dir(resolve_hub_dir(repo, [CONFIG, MODEL_WEIGHTS]), name=f"hf:{repo}")


def _hub_discriminator(repo: str, checkpoint: Optional[str]) -> nn.Module:
    return load_discriminator_dir(resolve_hub_dir(repo, [CONFIG, DISCRIMINATOR_WEIGHTS]))


register_scheme("hf", Scheme(_hub_generator, _hub_discriminator, help="ORG/NAME or a local directory"))


def generator_dir(path: str | Path) -> Path:
    """The generator directory at ``path``; a synthesis run directory stands for its ``generator/``."""
    p = Path(path)
    return p / "generator" if (p / "generator" / CONFIG).is_file() and not (p / MODEL_WEIGHTS).is_file() else p


def _local_dir(path: str) -> Path:
    p = generator_dir(path)
    if not (p / CONFIG).is_file():
        raise HatrefineError(f"{path} is not a saved generator directory (no {CONFIG}); pass a directory written by hatrefine")
    return p


register_scheme(
    "dir",
    Scheme(
        lambda path, ckpt: load_generator_dir(_local_dir(path), name=f"dir:{path}"),
        lambda path, ckpt: load_discriminator_dir(_local_dir(path)),
        help="PATH (a generator directory: a synthesize run, a distilled generator)",
    ),
)
