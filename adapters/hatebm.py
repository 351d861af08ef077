"""``hatebm:NAME``: the Hat EBM authors' released models (point0bar1/hat-ebm), converted once.

The authors released their trained generators and hats as TensorFlow 2 Keras checkpoints
(``FOLDER/gen.ckpt`` and the hat's ``FOLDER/ebm.ckpt``, each an ``.index`` + ``.data-*`` pair).
The first use reads them with TensorFlow (``pip install 'hatrefine[tf]'``; not needed again),
converts them into hatrefine's modules (convolution kernels HWIO -> OIHW, Dense (in, out) ->
Linear (out, in), batch-norm moving statistics as running statistics with Keras' epsilon 1e-3)
and writes a run directory, ``$HATREFINE_CACHE/hatebm/NAME`` (default ``~/.cache/hatrefine``):
``config.json`` with the recipe's settings (``hatrefine recipes``), ``hat.safetensors``,
``sampling.json`` (the recipe's test-time K, T and step sizes) and ``generator/``.
``HatRefiner.from_pretrained("hatebm:NAME")`` and ``--run hatebm:NAME`` load it; the generator
spec ``hatebm:NAME`` is its generator alone.

The checkpoints come from ``--checkpoint DIR`` (a downloaded release folder: FOLDER itself or a
folder above it, e.g. ``pretrained_nets/``), else from the repository's GitHub release assets,
downloaded once into ``$HATREFINE_CACHE/hatebm/release/`` (``HATREFINE_OFFLINE=1`` or
``HF_HUB_OFFLINE=1`` forbid it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from hatrefine.errors import HatrefineError
from hatrefine.files.cache import cache_root, offline
from hatrefine.files.checkpoint import load_strict, save_tensors
from hatrefine.files.jsonfiles import save_json
from hatrefine.files.names import CONFIG, GENERATOR_DIR, HAT_WEIGHTS, SAMPLING
from hatrefine.networks.generator import Generator
from hatrefine.networks.hat import create_hat
from hatrefine.networks.registry import (
    Scheme,
    create_architecture,
    register_architecture,
    register_scheme,
)
from hatrefine.networks.resblocks import ResNetDecoder
from hatrefine.settings.config import (
    FitConfig,
    SamplingSettings,
    SynthesisConfig,
    learned_output_range,
    run_config,
)
from hatrefine.settings.recipes import RECIPES

from .hub import load_generator_dir, save_generator_dir

register_architecture("sngan_resnet_decoder")(ResNetDecoder)

RELEASES = "https://github.com/point0bar1/hat-ebm/releases"
RELEASES_API = "https://api.github.com/repos/point0bar1/hat-ebm/releases"
GEN, EBM = "gen.ckpt", "ebm.ckpt"
VARIABLE = "/.ATTRIBUTES/VARIABLE_VALUE"
KERAS_BN_EPS = 1e-3
ARCHIVE = r"\.(zip|tar|tar\.gz|tgz)$"


@dataclass(frozen=True)
class Model:
    folder: str  # the release folder (named as the authors' configs)
    recipe: str
    size: int
    generator: str  # sngan (GenSNGAN{size}) or decoder (GenDecoder32, the retrofit)
    gen_factor: float  # the generator's output scale, gen_factor * tanh (not in the checkpoint)

    @property
    def synthesis(self) -> bool:
        return self.recipe.endswith("-synth")


MODELS = {
    "cifar10_refine": Model("cifar10_refine", "cifar10-refine", 32, "sngan", 1.0),
    "celeba64_refine": Model("celeb_a_refine", "celeba64-refine", 64, "sngan", 1.0),
    "cifar10_retrofit": Model("cifar10_retrofit", "cifar10-retrofit", 32, "decoder", 2.0),
    "cifar10_synth": Model("cifar10_synth", "cifar10-synth", 32, "sngan", 2.0),
    "celeba64_synth": Model("celeb_a_synth", "celeba64-synth", 64, "sngan", 2.0),
    "imagenet128_synth": Model("imagenet_synth", "imagenet128-synth", 128, "sngan", 2.0),
}
SNGAN_SHIFTS = {32: (0, 0, 0, 0), 64: (0, 1, 2, 3, 4), 128: (0, 0, 1, 2, 3, 4)}  # widths from the 4x4 bottom: ngf >> shift


def cache_dir() -> Path:
    return cache_root() / "hatebm"


def _model(name: str) -> Model:
    if name not in MODELS:
        raise HatrefineError(f"unknown model hatebm:{name}; use one of {', '.join(MODELS)}")
    return MODELS[name]


# -- the checkpoints: a local release folder, or the GitHub release ----------------------------


def _how(model: Model) -> str:
    return f"download {model.folder} from {RELEASES} and pass --checkpoint DIR"


def find_folder(root: Path, model: Model) -> Optional[Path]:
    """The release folder of ``model`` at or under ``root`` (the one holding its ``gen.ckpt``)."""
    if (root / f"{GEN}.index").is_file():
        return root
    found = sorted(p.parent for p in root.rglob(f"{GEN}.index") if p.parent.name == model.folder)
    return found[0] if found else None


def _ebm_prefix(folder: Path) -> Path:
    if (folder / f"{EBM}.index").is_file():
        return folder / EBM
    others = sorted(p for p in folder.glob("*.ckpt.index") if p.name != f"{GEN}.index")
    if len(others) != 1:
        raise HatrefineError(
            f"{folder} holds {len(others)} hat checkpoints besides {GEN} ({', '.join(p.name for p in others) or 'none'}); keep the release folder's {EBM} only"
        )
    return folder / others[0].name[: -len(".index")]


def _asset(releases: list, model: Model) -> dict:
    """The release asset holding ``model.folder``: an archive named after it, else the one archive of all models."""
    archives = [a for r in releases for a in r.get("assets", []) if re.search(ARCHIVE, a["name"])]
    named = [a for a in archives if re.sub(ARCHIVE, "", a["name"]) == model.folder]
    for pick in (named, [a for a in archives if model.folder in a["name"]], archives if len(archives) == 1 else []):
        if pick:
            return pick[0]
    names = ", ".join(a["name"] for r in releases for a in r.get("assets", [])) or "none"
    raise HatrefineError(f"no release asset of point0bar1/hat-ebm holds {model.folder} (assets: {names}); {_how(model)}")


def _extract(archive: Path, into: Path) -> None:
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():  # nothing outside ``into``
                if not (into / member).resolve().is_relative_to(into.resolve()):
                    raise HatrefineError(f"{archive} holds a path outside its folder ({member}); download the release again")
            z.extractall(into)
    else:
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")


def download_release(model: Model) -> Path:
    """The release folder of ``model``, downloaded once from the GitHub release into the cache."""
    root = cache_dir() / "release"
    folder = find_folder(root, model) if root.is_dir() else None
    if folder is not None:
        return folder
    if offline():
        raise HatrefineError(f"the authors' checkpoints for {model.folder} are not on this disk and downloads are off; {_how(model)}")
    root.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(RELEASES_API, timeout=60) as r:
            asset = _asset(json.load(r), model)
        archive = root / asset["name"]
        torch.hub.download_url_to_file(asset["browser_download_url"], str(archive), progress=True)
    except OSError as e:  # URLError and HTTPError are OSErrors
        raise HatrefineError(f"the authors' checkpoints for {model.folder} could not be downloaded ({e}); {_how(model)}") from None
    _extract(archive, root)
    archive.unlink()
    folder = find_folder(root, model)
    if folder is None:
        raise HatrefineError(f"the release asset {asset['name']} holds no {model.folder}/{GEN}; {_how(model)}")
    return folder


def release_folder(name: str, checkpoint: Optional[str] = None) -> Path:
    """Where the authors' checkpoints for ``hatebm:NAME`` are: under ``checkpoint`` if given, else downloaded."""
    model = _model(name)
    if checkpoint is None:
        return download_release(model)
    folder = find_folder(Path(checkpoint), model) if Path(checkpoint).is_dir() else None
    if folder is None:
        raise HatrefineError(f"--checkpoint {checkpoint} holds no {model.folder}/{GEN}.index; pass the release folder {model.folder} (or one above it)")
    return folder


# -- conversion ---------------------------------------------------------------------------
def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    """The variables of a Keras ``save_weights`` checkpoint, by object path (``block2/conv_1/kernel``); needs TensorFlow."""
    try:
        import tensorflow as tf
    except ImportError:
        raise HatrefineError("reading the authors' TensorFlow checkpoints needs TensorFlow (once, to convert them); pip install 'hatrefine[tf]'") from None
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as e:
        raise HatrefineError(f"{prefix} is not a readable TensorFlow checkpoint ({str(e).splitlines()[0][:120]}); download the release again") from None
    keys = [k for k in reader.get_variable_to_shape_map() if k.endswith(VARIABLE) and ".OPTIMIZER_SLOT" not in k and not k.startswith("optimizer/")]
    return {k[: -len(VARIABLE)]: reader.get_tensor(k) for k in keys}


_LAYERS = {"conv_1": "c1", "conv_2": "c2", "bn_1": "b1", "bn_2": "b2", "sc": "c_sc"}  # inside a block
_VARIABLES = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def torch_state(variables: dict[str, np.ndarray], source: str) -> dict[str, torch.Tensor]:
    """The authors' variables as hatrefine's state dict: their layer names to ours (``block2/conv_1`` ->
    ``block2.c1``, the hat's stem ``conv_1`` -> ``block1``, ``lin_5`` -> ``l5``, ``bn_5`` -> ``b5``), kernels
    HWIO -> OIHW and (in, out) -> (out, in), batch-norm moving statistics as running statistics."""
    state = {}
    for key, value in variables.items():
        *layers, var = key.split("/")
        if var not in _VARIABLES or len(layers) not in (1, 2):
            raise HatrefineError(f"{source} holds {key}, not a variable of the authors' networks; pass their release files")
        if len(layers) == 2:
            names = ["block1" if layers[0] == "conv_1" else layers[0], _LAYERS.get(layers[1], layers[1])]
        else:
            names = [re.sub(r"^(lin|bn|conv)_(\d+)$", lambda m: m[1][0] + m[2], layers[0])]
        t = torch.from_numpy(np.array(value, dtype=np.float32))
        if var == "kernel":
            t = t.permute(3, 2, 0, 1) if t.ndim == 4 else t.T
        state[".".join(names + [_VARIABLES[var]])] = t.contiguous()
        if var == "moving_mean":
            state[".".join(names + ["num_batches_tracked"])] = torch.tensor(0)
    return state


def _shape(variables: dict, pattern: str, source: str) -> list[int]:
    hits = [v.shape for k, v in variables.items() if re.fullmatch(pattern, k)]
    if len(hits) != 1:
        raise HatrefineError(f"{source} has no single {pattern} variable; pass the release's own files")
    return list(hits[0])


def build_generator(model: Model, variables: dict, source: str) -> tuple[torch.nn.Module, str, dict, tuple]:
    """The generator of ``model`` at the widths of ``variables``, their weights loaded: (module, architecture, kwargs, latent shape)."""
    if model.generator == "decoder":
        k = _shape(variables, r"block1/conv_1/kernel", source)
        arch = "sngan_resnet_decoder"
        kwargs = {
            "latent_channels": k[2],
            "width": k[3],
            "out_channels": _shape(variables, r"conv_5/kernel", source)[3],
            "out_factor": model.gen_factor,
            "bn_eps": KERAS_BN_EPS,
        }
        latent = (k[2], 16, 16)
    else:
        nz, out = _shape(variables, r"lin_1/kernel", source)
        last = len(SNGAN_SHIFTS[model.size]) + 1
        arch = "sngan_resnet_generator"
        channels = [out // 16 >> s for s in SNGAN_SHIFTS[model.size]]
        kwargs = {
            "nz": nz,
            "channels": channels,
            "out_channels": _shape(variables, rf"conv_{last}/kernel", source)[3],
            "out_factor": model.gen_factor,
            "bn_eps": KERAS_BN_EPS,
        }
        latent = (nz,)
    module = create_architecture(arch, **kwargs)
    load_strict(module, torch_state(variables, source), source)
    return module.eval(), arch, kwargs, latent


def build_hat(model: Model, variables: dict, source: str) -> tuple[torch.nn.Module, int]:
    """The authors' hat (``sngan{size}``, their block) at the width of ``variables``, their weights loaded; and that width."""
    width = _shape(variables, r"lin_\d+/kernel", source)[0]
    hat = create_hat(f"sngan{model.size}", (3, model.size, model.size), width, "authors")
    load_strict(hat, torch_state(variables, source), source)
    return hat, width


def settings(model: Model, hat_width: int, generator_kwargs: dict) -> FitConfig:
    """The recipe's settings for the converted run: generator ``dir:generator``, the checkpoint's widths."""
    if not model.synthesis:
        return FitConfig.from_recipe(model.recipe, generator=f"dir:{GENERATOR_DIR}", hat_width=hat_width)
    k = generator_kwargs
    no_data = RECIPES[model.recipe].settings["synthesize"]["data"] is None  # ImageNet: a folder of the user's
    config = SynthesisConfig.from_recipe(
        model.recipe, hat_width=hat_width, generator_width=k["channels"][0], latent_dim=k["nz"], **({"data": "-"} if no_data else {})
    )
    return dataclasses.replace(config, data=None) if no_data else config


def write_run(name: str, gen_variables: dict, hat_variables: dict, out: Path, source: str = "the release folder") -> Path:
    """Write the converted run directory ``out`` for ``hatebm:NAME`` from the checkpoints' variables (no TensorFlow needed)."""
    model = _model(name)
    generator, arch, kwargs, latent = build_generator(model, gen_variables, f"{source}/{GEN}")
    hat, hat_width = build_hat(model, hat_variables, f"{source}/{EBM}")
    config = settings(model, hat_width, kwargs)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    prior = None if model.generator == "decoder" else "normal"
    save_generator_dir(
        tmp / GENERATOR_DIR, generator, arch, kwargs, latent, (3, model.size, model.size), prior=prior, value_range=learned_output_range(model.gen_factor)
    )
    save_tensors(tmp / HAT_WEIGHTS, hat.state_dict())
    save_json(
        tmp / CONFIG,
        run_config(config, {"torch": torch.__version__}) | {"source": {"release": RELEASES, "folder": model.folder, "files": [GEN, EBM], "read_from": source}},
    )
    save_json(tmp / SAMPLING, SamplingSettings.from_config(config).to_dict())
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def converted_run(name: str, checkpoint: Optional[str] = None) -> Path:
    """The run directory of ``hatebm:NAME``: from the cache, else converted once from the authors' checkpoints."""
    out = cache_dir() / name
    if (out / CONFIG).is_file():
        return out
    folder = release_folder(name, checkpoint)
    gen = read_checkpoint(folder / GEN)
    ebm_prefix = _ebm_prefix(folder)
    return write_run(name, gen, read_checkpoint(ebm_prefix), out, str(folder))


def _generator(name: str, checkpoint: Optional[str]) -> Generator:
    return load_generator_dir(converted_run(name, checkpoint) / GENERATOR_DIR, name=f"hatebm:{name}")


register_scheme("hatebm", Scheme(_generator, names=list(MODELS), extra="tf"))  # TensorFlow only to convert, once
