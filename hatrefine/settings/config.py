"""Every setting of a fit, in one dataclass that is saved as the run's ``config.json``
(``SynthesisConfig`` adds the generator that tandem synthesis learns), and the settings a
run samples with (``SamplingSettings``, the run's ``sampling.json``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from hatrefine.errors import HatrefineError
from hatrefine.files.jsonfiles import read_json
from hatrefine.files.names import CONFIG, GENERATOR_DIR, SAMPLING
from hatrefine.files.schema import (
    FORMAT_VERSION,
    NUMBER,
    check_fields,
    check_version,
    settings_from_dict,
)
from hatrefine.settings.recipes import RECIPES, apply_recipe

MODES = ("joint", "conditional")
HAT_BLOCKS = ("authors", "mimicry")
JOINT_UPDATES = ("alternate", "simultaneous")


@dataclass(frozen=True)
class Schedule:
    """A factor on the step size (or noise) along a chain: from 1 at the first step to ``end`` at the last.

    ``kind``: ``constant`` (always 1), ``linear``, ``cosine`` or ``exponential``.
    """

    kind: str = "constant"
    end: float = 1.0

    def __post_init__(self):
        if self.kind not in ("constant", "linear", "cosine", "exponential"):
            raise HatrefineError(f"unknown schedule {self.kind!r}; use constant, linear, cosine or exponential")
        if self.kind == "exponential" and self.end <= 0:
            raise HatrefineError("an exponential schedule needs end > 0")

    def __call__(self, k: int, n_steps: int) -> float:
        t = k / max(1, n_steps - 1)
        if self.kind == "constant":
            return 1.0
        if self.kind == "linear":
            return 1.0 + (self.end - 1.0) * t
        if self.kind == "cosine":
            return self.end + (1.0 - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.end**t


EMBEDDED_GENERATOR = "builtin:mnist"
EMBEDDED_GENERATORS = ("builtin:mnist", "builtin:twemoji")  # shipped with their discriminators
GENERATOR_ARCHS = ("dcgan", "sngan32", "sngan64", "sngan128")
SNGAN_WIDTHS = {"sngan32": (256, 256, 256, 256), "sngan64": (1024, 512, 256, 128, 64), "sngan128": (1024, 1024, 512, 256, 128, 64)}


LEGACY = {
    "y_clip_test": None,
    "data_crop": "center",
    "joint_update": "alternate",
    "grad_penalty": 0.0,
    "calibrate": False,
    "hat": None,
    "tensorboard": False,
    "hat_block": "mimicry",
    "gen_factor": 1.0,
    "recipe": None,
    "y_sigma_test": None,
    "init_scale_res": 0.0,
}  # what runs saved before these settings existed did


@dataclass
class FitConfig:
    """Settings of a Hat EBM fit. Defaults are the embedded MNIST setting (the README's main job);
    ``from_recipe`` starts from one of the paper's experiments instead (``hatrefine.settings.recipes``)."""

    command: ClassVar[str] = "fit"  # the command whose recipe settings apply
    recipe: Optional[str] = None  # the recipe the settings came from (recorded; None: the defaults)
    generator: str = EMBEDDED_GENERATOR
    checkpoint: Optional[str] = None
    data: Optional[str] = None  # None: the embedded digits, for a generator of 1x32x32 images (trainer.default_data)
    data_root: Optional[str] = None
    data_crop: str = "center"  # center | random: how images of another size are fitted (hatrefine.data.CROPS)
    mode: str = "joint"
    hat: Optional[str] = "auto"  # resolved in __post_init__; None: chosen from the image shape (hatrefine.networks.hat.default_hat)
    hat_width: Optional[int] = None
    hat_block: str = "authors"  # the SN-GAN hats' residual block (hatrefine.networks.hat.HAT_BLOCKS)
    discriminator: Optional[str] = None  # for hat "discriminator"; None: the generator spec's own
    steps: int = 700
    batch_size: int = 32
    langevin_steps: int = 20  # K during training
    langevin_steps_test: Optional[int] = None  # K for sample/refine; None: same as training
    eps_y: float = 1e-4
    eps_z: float = 5e-3
    noise: float = 1.0
    y_clip: Optional[float] = 2.5
    y_clip_test: Optional[float] = None  # the Y-step bound when sampling and refining; None: y_clip; inf: unclipped
    joint_update: str = "simultaneous"  # simultaneous (one pass of H per step) | alternate (paper eq. 6-7, two passes)
    step_schedule: str = "constant"
    step_schedule_end: float = 1.0
    temperature: float = 1e-3
    temperature_test: Optional[float] = None  # T for sample/refine; None: same as training
    y_sigma: Optional[float] = None
    y_sigma_test: Optional[float] = None  # residual prior used only when sampling (the authors' tau_res = 1 / (2 sigma^2)); None: y_sigma
    init_scale_res: float = 0.0  # sampling chains start at Y = init_scale_res * N(0, I) (training chains at 0)
    z_prior_weight: float = 0.0
    data_noise: float = 1e-3
    lr: float = 1e-4
    lr_schedule: str = "constant"  # constant | cosine | step:N[:N...] (x 0.1 at each update N)
    adam_beta1: float = 0.9  # Adam's momentum for H (beta2 is 0.999)
    grad_clip: Optional[float] = None
    grad_penalty: float = 1e-2  # weight of mean ||grad_x H(data)||^2 / T in H's loss (trainer.data_gradient)
    ema: float = 0.999
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    log_every: int = 10
    tensorboard: bool = False  # also write the log rows and sample grids to RUN/tensorboard (hatrefine.training.events)
    sample_every: int = 100
    save_every: int = 100
    eval_samples: int = 1000  # for the before/after quality line at the end of a fit
    calibrate: bool = True  # choose the test-time T and K on held-out data at the end (hatrefine.evaluation.calibration)
    calibration_samples: int = 500
    max_residual_rms: float = 2.0  # divergence guard: per-pixel RMS of a sample's residual Y
    max_energy_growth: float = 10.0  # divergence guard: growth of the energy gap from one 50-update window to the next
    backoff: float = 0.5  # after a divergence: factor on the learning rate and the Langevin steps
    max_rollbacks: int = 5

    HELP: ClassVar[dict] = {  # the --help text of each field (one source for --help and docs/cli.md)
        "recipe": "Start from one of the paper's experiments (`hatrefine recipes`); options given explicitly override its values. Default: the generator spec's own recipe if it has one (mimicry:sngan_cifar10 -> cifar10-refine, mimicry:sngan_celeba64 -> celeba64-refine), else the embedded MNIST defaults.",
        "generator": "Generator spec (`hatrefine list`).",
        "checkpoint": "Local weights file for the generator.",
        "data": "Data spec: builtin:mnist, cifar10/mnist/svhn/celeba, a .npz, or an image folder (default: the recipe's; without one, builtin:mnist for a generator of 1x32x32 images).",
        "data_root": "Where torchvision datasets are (or get downloaded).",
        "data_crop": "How data images of another size are fitted: center (the centre at the target's aspect ratio, resized, as the authors' CelebA) or random (an image folder streamed from disk, the shorter side resized and a random square taken each epoch, as the authors' ImageNet).",
        "mode": "joint: Langevin on (Y, Z); conditional: Y only, Z from the prior.",
        "hat": "Hat network: small, sngan32, sngan64, sngan128, timm:MODEL, or discriminator (the GAN's own, negated, trained from its weights; see --discriminator); auto: discriminator for builtin:mnist (unless --hat-width is given), else by image size.",
        "hat_width": "Width of the hat network.",
        "hat_block": "Residual block of the sngan32/64/128 hats: authors (the Hat EBM authors': shortcut on the raw input, Keras initialisation) or mimicry (Mimicry's discriminator block: shortcut on relu(x)).",
        "discriminator": "For --hat discriminator: a discriminator spec or a weights file for the generator's architecture (default: the generator spec's own, e.g. builtin:mnist).",
        "steps": "Number of updates of H.",
        "batch_size": "Batch size (data and Langevin chains).",
        "langevin_steps": "K, Langevin steps per chain during training.",
        "langevin_steps_test": "K for sampling and refining (default: same as training); with --calibrate, the centre of the K grid calibration chooses from.",
        "eps_y": "Langevin step size on the residual Y.",
        "eps_z": "Langevin step size on the latent Z (joint mode).",
        "noise": "Scale of the Langevin noise (1 = exact Langevin).",
        "y_clip": "Per-sample bound on the norm of the Y gradient step.",
        "y_clip_test": "The bound on the Y step when sampling and refining (default: --y-clip; inf: unclipped, as the authors' FID chains ran and the paper recipes sample).",
        "joint_update": "Joint mode: alternate (Z, then Y at the new Z: the paper's, two passes of H per step) or simultaneous (both from one gradient: one pass of H, faster).",
        "step_schedule": "Step-size schedule along a chain: constant, linear, cosine, exponential.",
        "step_schedule_end": "Step-size factor at the last Langevin step.",
        "temperature": "T: the energy is H / T.",
        "temperature_test": "T for sampling and refining (default: same as training; a lower T sharpens samples); with --calibrate, the top of the T grid calibration chooses from.",
        "y_sigma": "Sigma of a Gaussian prior on Y (off by default; the paper used 0.1 for retrofit).",
        "y_sigma_test": "Sigma of a Gaussian prior on Y used only when sampling and refining (the authors' FID-time tau_res = 1 / (2 sigma^2); default: --y-sigma).",
        "init_scale_res": "Sampling chains start at Y = init-scale-res * N(0, I) instead of 0 (the authors used 0.01 at test time for synthesis and retrofit; training chains start at 0).",
        "z_prior_weight": "Weight of the N(0, I) prior term on Z (0 = off, as the authors ran it).",
        "data_noise": "Std of the Gaussian noise added to data images.",
        "lr": "Adam learning rate for H.",
        "lr_schedule": "constant, cosine (decay to 0 at the last update) or step:N[:N...] (x 0.1 at each update N; in synthesize for the generator's learning rate too).",
        "adam_beta1": "Adam's beta1 (momentum) for H; beta2 is 0.999.",
        "grad_clip": "Clip the gradient norm of H (off by default).",
        "grad_penalty": "Weight of the penalty on H's input-gradient scale at data, mean ||grad_x H(data)||^2 / T like the loss (R1; 0 = off): holds the Langevin chains' drift-to-noise ratio for long fits.",
        "ema": "EMA decay of H's weights, capped by (1 + step) / (10 + step) early on; sampling uses the EMA.",
        "seed": "Random seed.",
        "device": "auto, cpu, cuda or cuda:N.",
        "amp": "Evaluate energies (sampling and the H update) under bf16 autocast.",
        "channels_last": "Keep the hat network and its inputs in channels_last memory format (faster convolutions on recent GPUs).",
        "compile": "torch.compile the hat network (for GPUs: on CPU it measured slower).",
        "log_every": "Write log.csv every N steps.",
        "tensorboard": "Also write every logged scalar (losses, energies and their gap, lr, step sizes, residual norm, seconds per step, rollbacks) and the sample grids to RUN/tensorboard for TensorBoard (pip install 'hatrefine[tensorboard]').",
        "sample_every": "Save a sample grid every N steps.",
        "save_every": "Save a checkpoint every N steps.",
        "eval_samples": "Samples for the before/after quality line at the end (0 = skip).",
        "calibrate": "At the end, choose the test-time T (x 1, 1/1.5, 1/2, 1/3) and K (x 0.5, 1, 1.5) on the data's held-out split (quick metric, recall and coverage kept); sample/refine use them.",
        "calibration_samples": "Samples per setting for --calibrate.",
        "max_residual_rms": "Divergence guard: a step whose residual Y has a larger per-pixel RMS is rolled back.",
        "max_energy_growth": "Divergence guard: roll back when the median |E_data - E_samples| of 50 updates exceeds this many times the 50 before (inf = off).",
        "backoff": "After a rollback (non-finite energy, gradient or weights; exploding Y or energy gap): factor on lr and Langevin steps.",
        "max_rollbacks": "Give up after this many rollbacks.",
        # tandem synthesis only
        "image_shape": "C,H,W of the images to synthesize.",
        "generator_arch": "Generator to learn: dcgan, sngan32, sngan64, sngan128 (default: by image shape).",
        "latent_dim": "Latent size of the learned generator (default: 64 dcgan, 128 sngan).",
        "generator_width": "Width of the learned generator (default: the architecture's).",
        "generator_lr": "Adam learning rate for the generator.",
        "generator_loss_weight": "Weight of the generator's MSE onto bank images.",
        "bank_size": "Persistent bank of (Z, X) pairs the generator regresses onto.",
        "gen_factor": "The learned generator's output is gen_factor * tanh (the authors' 2: it can reach bank images outside [-1, 1]).",
    }

    def __post_init__(self):
        if self.recipe is not None and self.recipe not in RECIPES:
            raise HatrefineError(f"unknown recipe {self.recipe!r}; use one of {', '.join(RECIPES)} (`hatrefine recipes`)")
        if self.data_crop not in ("center", "random"):
            raise HatrefineError(f"unknown --data-crop {self.data_crop!r}; use center or random")
        if self.mode not in MODES:
            raise HatrefineError(f"unknown mode {self.mode!r}; use joint or conditional")
        if self.discriminator is not None and self.hat != "discriminator":
            raise HatrefineError("--discriminator only applies to --hat discriminator; add --hat discriminator or leave --discriminator out")
        if self.hat == "discriminator" and self.hat_width is not None:
            raise HatrefineError("--hat discriminator takes the discriminator's own widths; leave --hat-width out")
        for name in ("steps", "batch_size", "log_every", "sample_every", "save_every"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.calibration_samples < 10:
            raise HatrefineError(f"--calibration-samples must be at least 10, got {self.calibration_samples}")
        for name in ("langevin_steps", "eval_samples"):
            if getattr(self, name) < 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.langevin_steps_test is not None and self.langevin_steps_test < 0:
            raise HatrefineError(f"--langevin-steps-test must be >= 0, got {self.langevin_steps_test}")
        for name in ("temperature", "lr"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("y_clip", "y_clip_test"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive (inf: unclipped), got {getattr(self, name)}")
        for name in ("y_sigma", "y_sigma_test"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.init_scale_res >= 0:
            raise HatrefineError(f"--init-scale-res must be >= 0, got {self.init_scale_res}")
        if self.temperature_test is not None and self.temperature_test <= 0:
            raise HatrefineError(f"--temperature-test must be positive, got {self.temperature_test}")
        if self.max_residual_rms <= 0 or not 0 < self.backoff < 1 or self.max_rollbacks < 0:
            raise HatrefineError("--max-residual-rms must be positive, --backoff in (0, 1), --max-rollbacks >= 0")
        if not self.max_energy_growth > 1:
            raise HatrefineError(f"--max-energy-growth must be above 1 (inf turns the check off), got {self.max_energy_growth}")
        if not self.grad_penalty >= 0:
            raise HatrefineError(f"--grad-penalty must be >= 0 (0 = off), got {self.grad_penalty}")
        if not 0.0 <= self.adam_beta1 < 1.0:
            raise HatrefineError(f"--adam-beta1 must be in [0, 1), got {self.adam_beta1}")
        if not 0.0 <= self.ema < 1.0:
            raise HatrefineError(f"--ema must be in [0, 1), got {self.ema}")
        if self.joint_update not in JOINT_UPDATES:
            raise HatrefineError(f"unknown --joint-update {self.joint_update!r}; use {' or '.join(JOINT_UPDATES)}")
        self.lr_factor(0)  # validates the learning-rate schedule
        self.schedule()  # validates the step schedule

    @staticmethod
    def default_hat(settings: dict) -> Optional[str]:
        """What ``hat="auto"`` means for these settings: an embedded GAN's own discriminator for
        ``builtin:mnist`` (the best hat measured on it, docs/experiments.md) and ``builtin:twemoji``
        (a colour hat that fits the main job's budget on a CPU), with their own weights, unless a
        ``hat_width`` asks for another; else None (chosen by image size)."""
        embedded = settings.get("generator") in EMBEDDED_GENERATORS and settings.get("checkpoint") is None and settings.get("hat_width") is None
        return "discriminator" if embedded else None

    @classmethod
    def from_recipe(cls, name: str, **overrides) -> "FitConfig":
        """The recipe's settings (``hatrefine.settings.recipes``) with ``overrides`` on top."""
        settings, _ = apply_recipe(cls.command, field_defaults(cls) | overrides | {"recipe": name}, set(overrides))
        return cls(**settings)

    def lr_factor(self, step: int) -> float:
        """The learning-rate schedule's factor at update ``step``: 1 (constant), cosine decay to 0,
        or x 0.1 at each update listed in ``step:N[:N...]`` (the authors' ImageNet drops)."""
        if self.lr_schedule == "constant":
            return 1.0
        if self.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * step / self.steps))
        kind, _, drops = self.lr_schedule.partition(":")
        try:
            updates = [int(d) for d in drops.split(":")] if kind == "step" else None
        except ValueError:
            updates = None
        if not updates or min(updates) <= 0:
            raise HatrefineError(
                f"unknown --lr-schedule {self.lr_schedule!r}; use constant, cosine or step:N[:N...] (x 0.1 at each update N, e.g. step:230000:260000)"
            )
        return 0.1 ** sum(step >= d for d in updates)

    def test_clip(self) -> Optional[float]:
        """The Y-step bound of sampling and refining: ``y_clip_test`` (inf: none), else ``y_clip``."""
        clip = self.y_clip if self.y_clip_test is None else self.y_clip_test
        return None if clip is None or math.isinf(clip) else clip

    def latent_step(self) -> float:
        """The Langevin step on Z: ``eps_z`` in joint mode; conditional mode keeps Z where the prior drew it."""
        return self.eps_z if self.mode == "joint" else 0.0

    def schedule(self) -> Schedule:
        return Schedule(self.step_schedule, self.step_schedule_end)

    @property
    def test_steps(self) -> int:
        return self.langevin_steps if self.langevin_steps_test is None else self.langevin_steps_test

    @property
    def test_temperature(self) -> float:
        return self.temperature if self.temperature_test is None else self.temperature_test

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = CONFIG) -> "FitConfig":
        """Settings saved in a run, validated (``hatrefine.files.schema``); a setting the run predates
        takes the value it ran with (``LEGACY``)."""
        return settings_from_dict(cls, d, source, LEGACY)


def field_defaults(config_class) -> dict:
    """Every field of a settings dataclass with its default value."""
    return {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory() for f in dataclasses.fields(config_class)}


def learned_output_range(gen_factor: float) -> Optional[tuple[float, float]]:
    """The declared output range of a generator learned here: [-1, 1] for tanh; None (used as is) for ``gen_factor`` * tanh past it."""
    return (-1.0, 1.0) if gen_factor == 1.0 else None


def read_settings(path: str | Path, steps: Optional[int] = None) -> "FitConfig":
    """The settings of a run or saved model (its config.json's ``hatrefine`` entry), validated;
    a ``SynthesisConfig`` for a tandem-synthesis run. ``steps`` replaces the saved length."""
    path = Path(path)
    saved = read_json(path)
    check_version(saved, str(path))
    entry = saved.get("hatrefine")
    if not isinstance(entry, dict):
        raise HatrefineError(f"{path} holds no 'hatrefine' settings; pass the --out directory of `hatrefine fit` or `synthesize`")
    entry = entry | ({"steps": steps} if steps is not None else {})
    return settings_class(entry).from_dict(entry, str(path))


def settings_class(entry: dict) -> type:
    """The settings class of a saved ``hatrefine`` entry: ``SynthesisConfig`` for tandem synthesis."""
    return SynthesisConfig if "bank_size" in entry else FitConfig


def run_config(config: "FitConfig", versions: Optional[dict] = None) -> dict:
    """What a run's config.json holds: the format version, every setting (and the library versions)."""
    return {"format_version": FORMAT_VERSION, "hatrefine": config.to_dict()} | ({"versions": versions} if versions is not None else {})


@dataclass
class SamplingSettings:
    """What ``sample``, ``refine`` and the report use unless told otherwise, saved as a run's
    ``sampling.json``: the Langevin step sizes training ended with (after any rollback's
    ``--backoff``), and K and T (the config's test-time values, or what calibration chose).

    ``chosen_by``: ``config`` or ``calibration``; ``step_size_history``: one entry per change
    of the step sizes during the fit (``step``, ``eps_y``, ``eps_z``, ``reason``).
    """

    langevin_steps: int
    temperature: float
    eps_y: float
    eps_z: float
    chosen_by: str = "config"
    step_size_history: list = field(default_factory=list)

    @classmethod
    def from_config(cls, c: FitConfig) -> "SamplingSettings":
        eps_z = c.latent_step()
        return cls(c.test_steps, c.test_temperature, c.eps_y, eps_z, "config", [{"step": 0, "eps_y": c.eps_y, "eps_z": eps_z, "reason": "start"}])

    def calibrated(self, record: dict) -> "SamplingSettings":
        """These settings with the temperature and K that calibration chose (``hatrefine.evaluation.calibration``)."""
        pick = record["chosen"]
        return dataclasses.replace(self, temperature=pick["temperature"], langevin_steps=pick["langevin_steps"], chosen_by="calibration")

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, source: str = SAMPLING) -> "SamplingSettings":
        """Validated: a wrong type, a missing or unknown field, or a newer format is a one-line error."""
        if check_version(d, source, FORMAT_VERSION) < 1:
            raise HatrefineError(f"{source}: no format_version; delete the file to sample with the config's settings")
        kinds = {"langevin_steps": int, "temperature": NUMBER, "eps_y": NUMBER, "eps_z": NUMBER, "chosen_by": str, "step_size_history": list}
        check_fields(d, kinds, source)
        if d["langevin_steps"] < 0 or not d["temperature"] > 0 or d["eps_y"] < 0 or d["eps_z"] < 0:
            raise HatrefineError(
                f"{source}: langevin_steps, eps_y and eps_z must be >= 0 and temperature > 0; fix the file or delete it to sample with the config's settings"
            )
        return cls(**{k: d[k] for k in kinds})


@dataclass
class SynthesisConfig(FitConfig):
    """``FitConfig`` plus the generator that is learned; defaults: the embedded MNIST setting."""

    command: ClassVar[str] = "synthesize"
    generator: str = f"dir:{GENERATOR_DIR}"  # relative to the run directory
    data: Optional[str] = "builtin:mnist"
    mode: str = "conditional"
    image_shape: str = "1,32,32"
    generator_arch: Optional[str] = None  # None: dcgan up to 32 px grayscale, else sngan32/64/128
    latent_dim: Optional[int] = None  # None: 64 for dcgan, 128 for sngan
    generator_width: Optional[int] = None
    generator_lr: float = 1e-4
    generator_loss_weight: float = 1000.0
    gen_factor: float = 2.0  # the learned generator ends in gen_factor * tanh, as the authors' (1.0 before this setting existed)
    grad_penalty: float = 0.0  # off: not measured for tandem synthesis
    bank_size: int = 10000
    langevin_steps: int = 30
    eps_y: float = 5e-4
    temperature: float = 1e-8
    lr: float = 1e-4
    ema: float = 0.99
    steps: int = 1000
    batch_size: int = 64

    def __post_init__(self):
        super().__post_init__()
        if self.mode != "conditional":
            raise HatrefineError("tandem synthesis learns a conditional Hat EBM; leave --mode at conditional")
        if self.generator_arch is not None and self.generator_arch not in GENERATOR_ARCHS:
            raise HatrefineError(f"unknown --generator-arch {self.generator_arch!r}; use one of {', '.join(GENERATOR_ARCHS)}")
        for name in ("bank_size", "latent_dim", "generator_width"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.bank_size < self.batch_size:
            raise HatrefineError(f"--bank-size ({self.bank_size}) must be at least --batch-size ({self.batch_size})")
        if self.generator_lr <= 0 or self.generator_loss_weight <= 0 or not self.gen_factor > 0:
            raise HatrefineError("--generator-lr, --generator-loss-weight and --gen-factor must be positive")
        self.architecture()  # shape and architecture agree

    def shape(self) -> tuple[int, int, int]:
        try:
            c, h, w = (int(s) for s in self.image_shape.split(","))
        except ValueError:
            raise HatrefineError(f"--image-shape {self.image_shape!r} is not C,H,W (e.g. 1,32,32 or 3,64,64)") from None
        if min(c, h, w) <= 0:
            raise HatrefineError(f"--image-shape {self.image_shape!r} must be three positive sizes")
        return c, h, w

    def value_range(self) -> Optional[tuple[float, float]]:
        return learned_output_range(self.gen_factor)

    def architecture(self) -> tuple[str, dict, int]:
        """(registered architecture, its kwargs, latent size) of the generator to learn."""
        c, h, w = self.shape()
        arch = self.generator_arch or ("dcgan" if (c, h, w) == (1, 32, 32) else f"sngan{h}")
        if arch == "dcgan":
            if (h, w) != (32, 32):
                raise HatrefineError(f"the dcgan generator makes 32x32 images, not {h}x{w}; use --generator-arch sngan{h}")
            nz = self.latent_dim or 64
            return "dcgan_generator", {"nz": nz, "width": self.generator_width or 64, "channels": c, "out_factor": self.gen_factor}, nz
        if arch not in SNGAN_WIDTHS or (h, w) != (int(arch[5:]),) * 2:
            raise HatrefineError(f"no generator architecture for {h}x{w} images; use 32, 64 or 128 pixels")
        widths = list(SNGAN_WIDTHS[arch])
        if self.generator_width:
            widths = [max(1, round(v * self.generator_width / widths[0])) for v in widths]
        nz = self.latent_dim or 128
        return "sngan_resnet_generator", {"nz": nz, "channels": widths, "out_channels": c, "out_factor": self.gen_factor}, nz
