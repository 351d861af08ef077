"""Settings of the latent-space EBM priors: ``fit-prior`` (``PriorConfig``) and ``hierarchical``
(``HierarchicalConfig``, which learns its own multi-layer generator)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Optional

from hatrefine.errors import HatrefineError
from hatrefine.files.jsonfiles import read_json
from hatrefine.files.names import CONFIG, GENERATOR_DIR
from hatrefine.files.schema import check_version, settings_from_dict
from hatrefine.settings.config import FitConfig

KEY = "latent_prior"  # where config.json keeps a latent-prior run's settings
POSTERIOR_INITS = ("prior", "inversion", "persistent")


@dataclass
class PriorConfig:
    """Settings of ``hatrefine fit-prior`` (saved under ``latent_prior`` in config.json)."""

    command: ClassVar[str] = "fit-prior"
    recipe: Optional[str] = None  # the recipe the settings came from (recorded; None: the defaults)
    generator: str = "builtin:mnist"
    checkpoint: Optional[str] = None
    data: Optional[str] = None  # None: the embedded digits for a 1x32x32 generator
    data_root: Optional[str] = None
    energy_width: int = 200
    energy_depth: int = 2
    energy_layers: str = ""  # per latent layer, bottom first: DEPTHxWIDTH,... (empty: energy_depth x energy_width for each)
    sigma: float = 0.3  # observation noise of x = G(z) + N(0, sigma^2 I)
    prior_steps: int = 60
    prior_step_size: float = 0.4
    posterior_steps: int = 20
    posterior_step_size: float = 0.1
    posterior_init: str = "prior"  # prior: N(0, I) each step; inversion: Adam on ||G(z) - x||; persistent: the last chain's end per data image
    sample_steps: Optional[int] = None  # prior steps when sampling (None: prior_steps)
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-5
    adam_beta1: float = 0.5  # Pang et al.'s (0.5, 0.999)
    backoff: float = 0.5  # learning-rate factor after a rollback
    max_rollbacks: int = 3
    eval_samples: int = 1000  # end-of-fit before/after report (0: off)
    seed: int = 0
    device: str = "auto"
    log_every: int = 25
    save_every: int = 200
    tensorboard: bool = False

    HELP: ClassVar[dict] = FitConfig.HELP | {  # fit's help where the meaning is the same
        "generator": "Generator spec (`hatrefine list`); frozen, its latent gets the EBM prior.",
        "energy_width": "Width of the energy MLP f on the latent (Pang et al.: 200).",
        "energy_depth": "Hidden layers of the energy MLP f (Pang et al.: 2, i.e. 100 -> 200 -> 200 -> 1).",
        "energy_layers": "Each latent layer's energy MLP, bottom first, as DEPTHxWIDTH,... (Cui et al. on CIFAR-10: 3x200,2x100); default: --energy-depth x --energy-width for every layer.",
        "sigma": "Observation noise: x = G(z) + N(0, sigma^2 I) (0.3 in both papers).",
        "prior_steps": "Langevin steps of the prior chain (on ||z||^2 / 2 - f(z); G never runs).",
        "prior_step_size": "Step size s of the prior chain: z <- z - s^2 / 2 grad + s N(0, I).",
        "posterior_steps": "Langevin steps of the posterior chain on z given a data image.",
        "posterior_step_size": "Step size of the posterior chain.",
        "posterior_init": "Where posterior chains start: prior (N(0, I) every update, as the papers), inversion (Adam on ||G(z) - x||^2), persistent (the last chain's end for that image).",
        "sample_steps": "Prior-chain steps when sampling and refining (default: --prior-steps).",
        "steps": "Number of updates.",
        "batch_size": "Batch size (data images and prior chains).",
        "lr": "Adam learning rate of the energy f (the papers: 2e-5).",
        "adam_beta1": "Adam's beta1 for every network; beta2 is 0.999 (Pang et al.: 0.5; Cui et al.: 0.9).",
        "backoff": "After a rollback (non-finite loss or energy): factor on the learning rates.",
        "eval_samples": "Samples for the before/after quality line at the end: G(z), z ~ N(0, I), against z from the learned prior (0 = skip).",
        "save_every": "Save a checkpoint and a sample grid every N steps.",
        "tensorboard": "Also write every logged scalar to RUN/tensorboard (pip install 'hatrefine[tensorboard]').",
        "channels": "Image channels of the learned generator (32 x 32 images).",
        "latent_sizes": "Sizes of the latent layers, bottom (the image generator's input) first: 64,16 is z_1 of 64 under z_2 of 16.",
        "conditional_width": "Width of the MLPs giving each layer's mean and log-std from the layer above.",
        "image_width": "Width of the dcgan image generator.",
        "generator_lr": "Adam learning rate of the image generator and the conditionals (the authors: 1e-4).",
    }

    def __post_init__(self):
        for name in ("energy_width", "steps", "batch_size", "log_every", "save_every"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("energy_depth", "prior_steps", "posterior_steps", "eval_samples", "max_rollbacks"):
            if getattr(self, name) < 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("sigma", "prior_step_size", "posterior_step_size", "lr"):
            if not getattr(self, name) > 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.backoff < 1:
            raise HatrefineError(f"--backoff must be in (0, 1), got {self.backoff}")
        if self.posterior_init not in POSTERIOR_INITS:
            raise HatrefineError(f"unknown --posterior-init {self.posterior_init!r}; use {', '.join(POSTERIOR_INITS)}")
        if self.sample_steps is not None and self.sample_steps < 0:
            raise HatrefineError(f"--sample-steps must be >= 0, got {self.sample_steps}")
        if self.energy_layers:
            _layer_shapes(self.energy_layers)
        if self.recipe is not None:
            from hatrefine.settings.recipes import get_recipe

            get_recipe(self.recipe, self.command)

    def to_dict(self) -> dict:
        return asdict(self)

    def energy_layer_shapes(self, n_layers: int) -> Optional[list[tuple[int, int]]]:
        """``energy_layers`` as (depth, width) per latent layer (None: the same for every layer), checked against ``n_layers``."""
        if not self.energy_layers:
            return None
        shapes = _layer_shapes(self.energy_layers)
        if len(shapes) != n_layers:
            raise HatrefineError(f"--energy-layers {self.energy_layers!r} names {len(shapes)} layers; the generator's latent has {n_layers}")
        return shapes


def _layer_shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or s[0] < 0 or s[1] <= 0 for s in shapes):
        raise HatrefineError(f"--energy-layers {text!r} is not DEPTHxWIDTH per layer, bottom first (e.g. 3x200,2x100)")
    return shapes


PRIOR_LEGACY = {"recipe": None, "energy_layers": ""}  # what runs saved before these settings existed did


def read_prior_settings(directory: Path, config_class: type = PriorConfig, key: str = KEY, steps: Optional[int] = None):
    """The validated settings of a latent-prior run (``config_class`` under ``key``: a subclass's own)."""
    source = directory / CONFIG
    saved = read_json(source)
    check_version(saved, str(source))
    if not isinstance(saved.get(key), dict):
        raise HatrefineError(f"{directory} is not a `hatrefine {config_class.command}` run (no {key!r} in {CONFIG})")
    return settings_from_dict(config_class, saved[key] | ({"steps": steps} if steps is not None else {}), str(source), PRIOR_LEGACY)


@dataclass
class HierarchicalConfig(PriorConfig):
    """Settings of ``hatrefine hierarchical`` (saved under ``hierarchical`` in config.json; the
    ``latent_prior`` entry beside it makes the run loadable as a latent-prior run)."""

    command: ClassVar[str] = "hierarchical"
    key: ClassVar[str] = "hierarchical"
    generator: str = f"dir:{GENERATOR_DIR}"  # the run's own, learned
    data: Optional[str] = "builtin:mnist"
    channels: int = 1
    latent_sizes: str = "64,16"  # bottom (the image generator's input) first
    conditional_width: int = 200
    image_width: int = 48
    generator_lr: float = 1e-4
    adam_beta1: float = 0.9  # the authors' default Adam betas
    energy_width: int = 200
    energy_depth: int = 2
    posterior_steps: int = 20  # the authors ran 40: halved for 2 CPU cores
    steps: int = 1500
    eval_samples: int = 1000

    def __post_init__(self):
        super().__post_init__()
        if self.generator != f"dir:{GENERATOR_DIR}":
            raise HatrefineError("`hatrefine hierarchical` learns its own generator; use `hatrefine fit-prior --generator SPEC` for a prior on a frozen one")
        if not self.sizes() or min(self.sizes()) <= 0:
            raise HatrefineError(f"--latent-sizes must be positive sizes, bottom layer first, e.g. 64,16; got {self.latent_sizes!r}")
        for name in ("channels", "conditional_width", "image_width"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.generator_lr > 0:
            raise HatrefineError(f"--generator-lr must be positive, got {self.generator_lr}")

    def sizes(self) -> list[int]:
        try:
            return [int(n) for n in str(self.latent_sizes).split(",")]
        except ValueError:
            return []

    def generator_kwargs(self) -> dict:
        return {"latent_sizes": self.sizes(), "width": self.conditional_width, "image_width": self.image_width, "channels": self.channels}

    def prior_settings(self) -> PriorConfig:
        """The settings of the latent-prior run this run also is."""
        return PriorConfig(
            **{k: v for k, v in self.to_dict().items() if k in PriorConfig.__dataclass_fields__ and k != "recipe"}
        )  # the recipe is hierarchical's
