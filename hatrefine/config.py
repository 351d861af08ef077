"""Every setting of a fit, in one dataclass that is saved as the run's ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from .errors import HatrefineError
from .sampler import Schedule

MODES = ("joint", "conditional")


@dataclass
class FitConfig:
    """Settings of a Hat EBM fit. Defaults are the embedded MNIST setting (the README's main job)."""

    generator: str = "builtin:mnist"
    checkpoint: Optional[str] = None
    data: str = "builtin:mnist"
    data_root: Optional[str] = None
    mode: str = "joint"
    hat: Optional[str] = None  # None: chosen from the image shape (hatrefine.hat.default_hat)
    hat_width: Optional[int] = None
    steps: int = 300
    batch_size: int = 32
    langevin_steps: int = 20  # K during training
    langevin_steps_test: Optional[int] = None  # K for sample/refine; None: same as training
    eps_y: float = 1e-4
    eps_z: float = 5e-3
    noise: float = 1.0
    y_clip: Optional[float] = 2.5
    step_schedule: str = "constant"
    step_schedule_end: float = 1.0
    temperature: float = 1e-3
    y_sigma: Optional[float] = None
    z_prior_weight: float = 0.0
    data_noise: float = 1e-3
    lr: float = 2e-4
    lr_schedule: str = "constant"  # constant | cosine
    grad_clip: Optional[float] = None
    ema: float = 0.999
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    log_every: int = 10
    sample_every: int = 100
    save_every: int = 100
    eval_samples: int = 1000  # for the before/after quality line at the end of a fit

    def __post_init__(self):
        if self.mode not in MODES:
            raise HatrefineError(f"unknown mode {self.mode!r}; use joint or conditional")
        for name in ("steps", "batch_size", "log_every", "sample_every", "save_every"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("langevin_steps", "eval_samples"):
            if getattr(self, name) < 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.langevin_steps_test is not None and self.langevin_steps_test < 0:
            raise HatrefineError(f"--langevin-steps-test must be >= 0, got {self.langevin_steps_test}")
        for name in ("temperature", "lr"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.ema < 1.0:
            raise HatrefineError(f"--ema must be in [0, 1), got {self.ema}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise HatrefineError(f"unknown --lr-schedule {self.lr_schedule!r}; use constant or cosine")
        self.schedule()  # validates the step schedule

    def schedule(self) -> Schedule:
        return Schedule(self.step_schedule, self.step_schedule_end)

    @property
    def test_steps(self) -> int:
        return self.langevin_steps if self.langevin_steps_test is None else self.langevin_steps_test

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
