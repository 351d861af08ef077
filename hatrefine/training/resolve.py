"""One way to resolve a new run's settings, shared by the CLI and the Python API.

What the user gave, on top of the defaults; then the recipe (named, or the generator spec's
own); then absolute paths (so the saved run reloads from anywhere); then what the generator
decides (its spec, the default data, the default hat). The result is a new settings object:
trainers read it and never change it. A saved run's settings are already resolved.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from hatrefine.errors import HatrefineError
from hatrefine.files.names import GENERATOR_DIR
from hatrefine.networks.generator import Generator
from hatrefine.networks.hat import DEFAULT_WIDTH, default_hat
from hatrefine.networks.registry import absolute_source, absolute_spec, load_generator
from hatrefine.settings.config import field_defaults
from hatrefine.settings.recipes import EMBEDDED_RECIPES, Recipe, apply_recipe

EMBEDDED_DATA = {"builtin:twemoji": "builtin:twemoji"}  # an embedded generator -> the data it was trained on


@dataclass(frozen=True)
class Resolved:
    config: Any  # FitConfig, SynthesisConfig, PriorConfig, ... with every value settled
    recipe: Optional[Recipe]  # the recipe the values came from, if any
    generator: Optional[Generator]  # the frozen generator the settings name, loaded once (None: the run learns its own)
    seeded: bool = False  # torch was seeded with the run's seed just before the generator was built, as a fit does


def resolve(config_class, settings: dict, given: Optional[Iterable[str]] = None, generator: Optional[Generator] = None) -> Resolved:
    """``settings`` (some or all fields of ``config_class``) resolved into a run's settings.

    ``given``: the settings the user chose (default: every key of ``settings``); a recipe fills
    the others. ``generator``: a generator object to use instead of loading the spec."""
    given = set(settings if given is None else given)
    full = field_defaults(config_class) | settings
    if generator is not None and "generator" in full:
        full["generator"], given = generator.name, given | {"generator"}  # a registry spec, or the name of a Python object
    full, recipe = apply_recipe(config_class.command, full, given)
    full = absolute_paths(full, spec=generator is None)
    learns_generator = full.get("generator") == f"dir:{GENERATOR_DIR}" or "generator" not in full
    config = config_class(**full)  # checks the settings as given, before defaults are settled
    if getattr(config, "hat", None) == "auto":
        config = dataclasses.replace(config, hat=config_class.default_hat(full))
    if learns_generator:
        return Resolved(config, recipe, None)
    if generator is None:  # seeded first, so that the networks a fit builds next start from the draws they always had
        torch.manual_seed(config.seed)
    G = generator or load_generator(config.generator, config.checkpoint)
    if getattr(config, "data", "") is None:
        config = dataclasses.replace(config, data=default_data(G))
    if recipe is None and getattr(config, "hat_width", 0) is None:  # a recipe keeps the paper's widths
        config = dataclasses.replace(config, hat_width=default_hat_width(config.hat, G.image_shape))
    return Resolved(config, recipe, G, seeded=generator is None)


def default_hat_width(hat: Optional[str], image_shape) -> Optional[int]:
    """The width a new fit's hat gets when none is given: ``DEFAULT_WIDTH`` (sized for a CPU) for the SN-GAN and small hats, None for others."""
    name = hat or default_hat(image_shape)
    return DEFAULT_WIDTH.get(name)


def absolute_paths(settings: dict, spec: bool = True) -> dict:
    """``settings`` with the checkpoint, the discriminator and (``spec``) the generator spec's paths
    made absolute, so a saved run reloads from any folder; a learned generator's ``dir:generator`` stays."""
    out = dict(settings)
    if out.get("checkpoint"):
        out["checkpoint"] = str(Path(out["checkpoint"]).resolve())
    if out.get("discriminator"):
        out["discriminator"] = absolute_source(out["discriminator"])
    if spec and out.get("generator") and out["generator"] != f"dir:{GENERATOR_DIR}":
        out["generator"] = absolute_spec(out["generator"])
    return out


def resolve_config(config, generator: Optional[Generator] = None) -> Resolved:
    """A settings object built by hand (``FitConfig(...)``), resolved as if every field had been given."""
    return resolve(type(config), dataclasses.asdict(config), generator=generator)


def default_data(generator: Generator) -> str:
    """An embedded generator's own data, the embedded digits for any generator of their shape
    (1x32x32); else a one-line error, never a resized set."""
    shape = tuple(generator.image_shape)
    if generator.name in EMBEDDED_DATA:
        return EMBEDDED_DATA[generator.name]
    if shape == (1, 32, 32):
        return "builtin:mnist"
    raise HatrefineError(
        f"{generator.name} makes {'x'.join(map(str, shape))} images and has no recipe; pass --data (cifar10, svhn or celeba with --data-root, a .npz or an "
        f"image folder) or --recipe NAME (`hatrefine recipes`)"
    )


def default_run_dir(config_class, settings: dict, given: Iterable[str], suffix: str) -> str:
    """``runs/RECIPE`` for a paper recipe's run, else ``runs/GENERATOR-SUFFIX`` (``runs/mnist-joint`` for the embedded GAN)."""
    full, recipe = apply_recipe(config_class.command, field_defaults(config_class) | settings, set(given))
    if recipe is not None and recipe.name not in EMBEDDED_RECIPES:
        return f"runs/{recipe.name}"
    prefix, _, name = full["generator"].partition(":")
    name = name.split("[")[0].rstrip("/")
    short = name if prefix in ("builtin", "mimicry", "hatebm", "biggan") else Path(name).name or prefix
    return f"runs/{re.sub(r'[^A-Za-z0-9_.-]+', '-', short).strip('-')}-{suffix}"
