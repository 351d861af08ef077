"""One way to save and load a fitted model, shared by ``HatRefiner`` and ``LatentPriorRefiner``
(as diffusers' ``save_pretrained`` / ``from_pretrained``).

A saved directory is self-contained: ``config.json``, the trained weights, the model's extra
files (a Hat EBM's ``sampling.json``), and whatever of the generator lives on this disk only: a
generator directory (``ae:DIR``, ``dir:DIR``, a synthesis run's own) is copied into
``generator/`` and named ``dir:generator``; a local weights file (``--checkpoint``, a
``--discriminator`` file) is copied in beside the config. Registry generators (``builtin:``,
``mimicry:`` without a file, ``hf:``) are named by their spec. Relative names are read against
the directory they are saved in.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import ClassVar, Optional

from torch import nn

from hatrefine.distributed import resolve_device
from hatrefine.errors import HatrefineError
from hatrefine.files.checkpoint import load_strict, read_state_dict, save_tensors
from hatrefine.files.jsonfiles import save_json
from hatrefine.files.names import CHECKPOINT_DIR, CONFIG, ENCODER_WEIGHTS, GENERATOR_DIR, LOCK, SAMPLING
from hatrefine.files.schema import FORMAT_VERSION, versions
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import is_known_spec, load_generator

LOCAL_FILES = {"checkpoint": "generator_weights", "discriminator": "discriminator_weights"}  # setting -> the name its copied file gets


def run_directory(path: str | Path, checkpoint: Optional[str] = None) -> Path:
    """A run's local directory: the path itself, a Hub snapshot for ``hf:ORG/NAME``, or the authors'
    model ``hatebm:NAME`` converted into the cache (``checkpoint``: their downloaded release folder)."""
    path = str(path)
    if path.startswith("hatebm:"):
        from hatrefine.adapters.hatebm import converted_run

        return converted_run(path[7:], checkpoint)
    if path.startswith("hf:"):
        from hatrefine.adapters.hub import resolve_hub_dir

        return resolve_hub_dir(path[3:], [CONFIG, "*.safetensors", "*_weights*", SAMPLING, f"{GENERATOR_DIR}/*"])
    directory = Path(path)
    if not (directory / CONFIG).is_file():
        raise HatrefineError(f"{directory} is not a hatrefine run (no {CONFIG}); pass the --out directory of `hatrefine fit` or `fit-prior`")
    return directory.resolve()


def located(settings, directory: Path):
    """``settings`` with the generator spec and local files that a saved directory names relatively read against it."""
    changes = {}
    spec = settings.generator
    if spec.startswith("dir:") and not Path(spec[4:]).is_absolute():
        changes["generator"] = f"dir:{directory / spec[4:]}"
    for key in LOCAL_FILES:
        value = getattr(settings, key, None)
        if value and not Path(value).is_absolute() and (directory / value).is_file():
            changes[key] = str(directory / value)
    return dataclasses.replace(settings, **changes) if changes else settings


def load_run_generator(settings, directory: Path, generator: Optional[Generator] = None) -> Generator:
    """The generator a run's (located) settings name; ``generator`` stands in for one passed from Python."""
    if generator is not None:
        return generator
    if not is_known_spec(settings.generator):
        raise HatrefineError(
            f"this run used the generator {settings.generator!r}, passed from Python; load it with from_pretrained({str(directory)!r}, generator=G)"
        )
    return load_generator(settings.generator, settings.checkpoint)


class PretrainedModel(nn.Module):
    """A fitted model that saves into, and loads from, one self-contained directory."""

    weights_name: ClassVar[str]  # the file of the trained weights
    settings_key: ClassVar[str]  # where config.json keeps the settings

    config: object  # the model's settings (a dataclass with ``to_dict``)

    # -- what a model says about itself -------------------------------------------------------
    def trained(self) -> nn.Module:
        """The module whose weights the directory stores."""
        raise NotImplementedError

    def extra_files(self) -> dict[str, dict]:
        """JSON files saved beside the config, by name."""
        return {}

    @classmethod
    def read_settings(cls, directory: Path):
        raise NotImplementedError

    @classmethod
    def build(cls, directory: Path, settings, generator: Generator) -> "PretrainedModel":
        """The model with freshly built (untrained) networks; ``from_pretrained`` loads the weights."""
        raise NotImplementedError

    # -- saving and loading ---------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write the model into ``directory``, self-contained (see the module's docstring)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        settings = self.config.to_dict()
        spec = settings.get("generator", "")
        local_dir = _local_generator_dir(spec)
        if local_dir is not None:
            if not (local_dir / CONFIG).is_file():
                raise HatrefineError(f"the model's generator {spec} is not on this disk any more; restore it before saving")
            if local_dir.resolve() != (directory / GENERATOR_DIR).resolve():
                ignore = shutil.ignore_patterns(f"{CHECKPOINT_DIR}*", "*.png", "log.csv", ENCODER_WEIGHTS, "tensorboard", LOCK)
                shutil.copytree(local_dir, directory / GENERATOR_DIR, ignore=ignore, dirs_exist_ok=True)
            settings["generator"] = f"dir:{GENERATOR_DIR}"
        for key, name in LOCAL_FILES.items():
            value = settings.get(key)
            if value and Path(value).is_file():
                target = name + Path(value).suffix
                if Path(value).resolve() != (directory / target).resolve():
                    shutil.copy2(value, directory / target)
                settings[key] = target
        save_tensors(directory / self.weights_name, self.trained().state_dict())
        for name, record in self.extra_files().items():
            save_json(directory / name, record)
        save_json(directory / CONFIG, {"format_version": FORMAT_VERSION, self.settings_key: settings, "versions": versions()})

    @classmethod
    def from_pretrained(cls, path: str | Path, device: Optional[str] = None, generator: Optional[Generator] = None, checkpoint: Optional[str] = None):
        """Load from a run or saved directory, ``hf:ORG/NAME`` on the Hub, or ``hatebm:NAME`` (the authors' models).

        ``generator`` overrides the one named in the config (for a custom, unregistered decoder);
        ``checkpoint``: for ``hatebm:NAME``, the authors' release folder downloaded by hand.
        """
        directory = run_directory(path, checkpoint)
        settings = located(cls.read_settings(directory), directory)
        dev = resolve_device(device or settings.device)
        model = cls.build(directory, settings, load_run_generator(settings, directory, generator).to(dev))
        weights = directory / cls.weights_name
        if not weights.is_file():
            raise HatrefineError(f"{directory} has no {cls.weights_name} yet; let the fit save a checkpoint first")
        load_strict(model.trained(), read_state_dict(weights), str(weights))
        return model.to(dev)


def _local_generator_dir(spec: str) -> Optional[Path]:
    """The directory of a generator that lives on this disk only (``ae:DIR``, ``dir:DIR``), else None."""
    prefix, _, path = spec.partition(":")
    if prefix not in ("ae", "dir"):
        return None
    from hatrefine.adapters.hub import generator_dir

    return generator_dir(Path(path))
