"""The training loop: maximum-likelihood learning of the hat network H (paper eq. 8).

Each step: take a data batch (plus small Gaussian noise); draw Z from the prior and run
K short-run Langevin steps from Y = 0; lower H on data, raise it on the samples:

    loss = (mean H(data) - mean H(samples)) / T

A run directory holds everything::

    config.json          every setting, generator and data spec, seed, library versions
    hat.safetensors      the EMA weights of H: what sampling and evaluation use
    checkpoint/          H, EMA, optimizer and RNG state for --resume (replaced atomically)
    log.csv              step, loss, energies of data and samples, lr, step sizes, residual norm
    samples/             sample grids over time
    training_curve.png, before_after.png, langevin_path.png, quality.json (at the end)
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from . import __version__, report
from .checkpoint import (
    RunLog,
    CKPT,
    has_checkpoint,
    load_checkpoint,
    load_optimizer,
    load_strict,
    optimizer_tensors,
    prepare_run_dir,
    read_json,
    save_checkpoint,
    save_json,
    save_tensors,
    subdict,
)
from .config import FitConfig
from .data import DataStream, open_dataset
from .errors import HatrefineError
from .generator import Generator
from .refiner import CONFIG, HAT_WEIGHTS, HatRefiner, build_hat, resolve_device
from .registry import absolute_spec, load_generator

LOG_FIELDS = ["step", "loss", "energy_data", "energy_samples", "lr", "eps_y", "eps_z", "residual_norm", "seconds_per_step"]


def versions() -> dict:
    import torchvision

    return {"hatrefine": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}


class Trainer:
    """Fits a hat network into ``out``; ``resume=True`` continues the run saved there exactly."""

    config_class = FitConfig
    log_fields = LOG_FIELDS

    def __init__(
        self,
        config: Optional[FitConfig],
        out: str | Path,
        generator: Optional[Generator] = None,
        resume: bool = False,
        overwrite: bool = False,
        steps: Optional[int] = None,
    ):
        """``resume=True`` takes every setting from the saved run; ``steps`` may extend it."""
        self.out = Path(out)
        prepare_run_dir(self.out, resume, overwrite, CONFIG)
        if resume:
            saved = read_json(self.out / CONFIG)["hatrefine"]
            config = self.config_class.from_dict({**saved, **({"steps": steps} if steps is not None else {})})
        elif config is None:
            raise HatrefineError("a new fit needs its settings (a FitConfig)")
        if config.checkpoint:
            config.checkpoint = str(Path(config.checkpoint).resolve())
        if generator is not None:
            config.generator = generator.name  # a registry spec, or the name of a Python object
        self.config = c = config
        self.device = resolve_device(c.device)
        torch.manual_seed(c.seed)

        # data -> adapter -> energy -> sampler
        self.generator = (generator or self.make_generator()).to(self.device)
        if c.mode == "conditional":
            self.generator.require_prior()  # before any data is read or anything written
        self.data = DataStream(open_dataset(c.data, self.generator.image_shape, split="train", root=c.data_root), c.batch_size, c.seed)
        self.hat = build_hat(c, self.generator).to(self.device)
        self.ema = build_hat(c, self.generator).to(self.device).requires_grad_(False)
        self.ema.load_state_dict(self.hat.state_dict())
        self.refiner_train = HatRefiner(self.generator, torch.compile(self.hat) if c.compile else self.hat, c)
        self.sampler = self.refiner_train.sampler(c.langevin_steps)
        self.opt = torch.optim.Adam(self.hat.parameters(), lr=c.lr, betas=(0.9, 0.999))
        self.rng = torch.Generator(self.device).manual_seed(c.seed)
        self.log = RunLog(self.out / "log.csv", self.log_fields)
        self.step = 0
        self._resumed_state = load_checkpoint(self.out) if resume and has_checkpoint(self.out) else None
        if self._resumed_state is not None:
            self._load_state(*self._resumed_state)
        elif resume:  # stopped before its first checkpoint: start again from step 0
            self.log.truncate(0)
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            save_json(self.out / CONFIG, {"hatrefine": c.to_dict(), "versions": versions()})

    def make_generator(self) -> Generator:
        """The frozen generator named by the config (paths in specs made absolute for the record)."""
        self.config.generator = absolute_spec(self.config.generator)
        return load_generator(self.config.generator, self.config.checkpoint)

    # -- the loop -------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        c = self.config
        if c.lr_schedule == "cosine":
            return c.lr * 0.5 * (1 + math.cos(math.pi * step / c.steps))
        return c.lr

    def train_step(self) -> dict:
        """One update of H; returns the numbers that go in the log."""
        c, t0 = self.config, time.perf_counter()
        data = self.data.batch(self.step).to(self.device)
        data = data + c.data_noise * torch.randn(data.shape, generator=self.rng, device=self.device)
        z = self.generator.sample_latent(c.batch_size, generator=self.rng)
        samples = self.sampler.sample(z, generator=self.rng)

        lr = self.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        energy_data = self.hat(data).mean() / c.temperature
        energy_samples = self.hat(samples.x).mean() / c.temperature
        loss = energy_data - energy_samples
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.hat.parameters(), c.grad_clip)
        self.opt.step()
        self._update_ema()
        self.step += 1
        self.last_samples = samples
        return {
            "step": self.step,
            "loss": loss.item(),
            "energy_data": energy_data.item(),
            "energy_samples": energy_samples.item(),
            "lr": lr,
            "eps_y": c.eps_y,
            "eps_z": c.eps_z if c.mode == "joint" else 0.0,
            "residual_norm": samples.y.flatten(1).norm(dim=1).mean().item(),
            "seconds_per_step": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))  # warm-up: early weights fade fast
        for e, p in zip(self.ema.parameters(), self.hat.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.hat.buffers()):
            e.copy_(b)

    def run(self, progress: bool = True) -> None:
        """Train to ``config.steps``, logging, saving grids and checkpoints; then write the report."""
        c = self.config
        bar = tqdm(total=c.steps, initial=self.step, disable=not progress, desc="fit", unit="step", dynamic_ncols=True)
        rows = []
        while self.step < c.steps:
            row = self.train_step()
            rows.append(row)
            bar.update(1)
            bar.set_postfix(E_data=f"{row['energy_data']:.3g}", E_samples=f"{row['energy_samples']:.3g}", s_per_step=f"{row['seconds_per_step']:.2f}")
            saving = self.step % c.save_every == 0 or self.step == c.steps
            if self.step % c.log_every == 0 or saving:
                self.log.append(rows)
                rows = []
            if self.step % c.sample_every == 0 or self.step == c.steps:
                report.save_grid(self.last_samples.x, self.out / "samples" / f"step_{self.step:06d}.png")
            if saving:
                self.save_checkpoint()
        bar.close()
        report.training_curve(self.out / "log.csv", self.out / "training_curve.png")
        if c.eval_samples:
            report.before_after(self.refiner(), self.out, n=c.eval_samples, seed=c.seed)

    def refiner(self) -> HatRefiner:
        """The fitted model with the EMA weights (what sampling uses)."""
        return HatRefiner(self.generator, self.ema, self.config)

    # -- persistence ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a resumed run needs, as flat tensors (subclasses add theirs)."""
        opt, self._param_groups = optimizer_tensors(self.opt, "opt")
        tensors = {f"hat.{k}": v for k, v in self.hat.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()} | opt
        return tensors | {"rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}

    def save_checkpoint(self) -> None:
        """Swap in a new ``checkpoint/`` (atomically), then write ``hat.safetensors``."""
        tensors = self.state_tensors()
        save_checkpoint(self.out, tensors, self.checkpoint_meta())
        save_tensors(self.out / HAT_WEIGHTS, self.ema.state_dict())

    def checkpoint_meta(self) -> dict:
        """The JSON half of a checkpoint (after ``state_tensors``)."""
        return {"step": self.step, "param_groups": self._param_groups, "log_rows": self.log.n_rows()}

    def _load_state(self, t: dict[str, torch.Tensor], meta: dict) -> None:
        source = str(self.out / CKPT)
        load_strict(self.hat, subdict(t, "hat"), source)
        load_strict(self.ema, subdict(t, "ema"), source)
        load_optimizer(self.opt, t, "opt", meta["param_groups"])
        self.rng.set_state(t["rng"])
        torch.set_rng_state(t["torch_rng"])
        self.step = meta["step"]
        self.log.truncate(meta["log_rows"])
