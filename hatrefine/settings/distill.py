"""Settings of ``hatrefine distill``: a latent map T learned so that G(T(z)), z ~ N(0, I), is
distributed as a fitted run's refined samples (``DistillConfig``, saved in the output's config.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from hatrefine.errors import HatrefineError

# onto each chain's end point (cooperative learning) | distribution matching in pixels | an amortised proximal step on the energy
METHODS = ("regression", "mmd", "energy")


@dataclass
class DistillConfig:
    """Settings of ``hatrefine distill`` (saved under ``distilled`` in the output's config.json)."""

    command: ClassVar[str] = "distill"
    run: str = "runs/mnist-joint"
    method: str = "regression"
    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 128
    depth: int = 2
    seed: int = 0
    device: str = "auto"
    log_every: int = 25
    save_every: int = 100
    eval_samples: int = 1000  # the before/after quality line at the end (0: off)

    HELP: ClassVar[dict] = {
        "run": "The fitted run to distil (fit, synthesize or fit-prior; its calibrated T and K).",
        "method": "How T learns: regression (onto each chain's end latent from the same start, as cooperative learning's generator step), mmd (distribution matching of G(T(z)) against the chains' images, RBF kernels at several bandwidths) or energy (no chains: T(z) lowers the run's energy plus ||T(z) - z||^2 / (K eps_z^2), the chains' gradient steps amortised).",
        "steps": "Updates of T.",
        "batch_size": "Chains (and latents) per update.",
        "lr": "Adam learning rate of T.",
        "width": "Width of T's hidden layers.",
        "depth": "Hidden layers of T.",
        "seed": "Seed of the latents, the chains and T's initial weights.",
        "eval_samples": "Samples for the before/after quality line at the end: G(z), the run's chains and G(T(z)) from the same z (0 = skip).",
        "save_every": "Save a checkpoint every N updates.",
    }

    def __post_init__(self):
        if self.method not in METHODS:
            raise HatrefineError(f"unknown --method {self.method!r}; use {' or '.join(METHODS)}")
        for name in ("steps", "batch_size", "width", "depth", "log_every", "save_every"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.lr > 0 or self.eval_samples < 0:
            raise HatrefineError(f"--lr must be positive and --eval-samples >= 0, got {self.lr} and {self.eval_samples}")

    def to_dict(self) -> dict:
        return asdict(self)
