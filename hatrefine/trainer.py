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

import csv
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from . import __version__, report
from .checkpoint import load_strict, read_json, read_state_dict, save_json, save_tensors
from .config import FitConfig
from .data import DataStream, open_dataset
from .errors import HatrefineError
from .generator import Generator
from .refiner import CONFIG, HAT_WEIGHTS, HatRefiner, build_hat, resolve_device
from .registry import load_generator

CKPT = "checkpoint"
LOG_FIELDS = ["step", "loss", "energy_data", "energy_samples", "lr", "eps_y", "eps_z", "residual_norm", "seconds_per_step"]


def versions() -> dict:
    import torchvision

    return {"hatrefine": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}


class Trainer:
    """Fits a hat network into ``out``; ``resume=True`` continues the run saved there exactly."""

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
        if resume:
            if not (self.out / CONFIG).is_file():
                raise HatrefineError(f"nothing to resume in {self.out} (no {CONFIG}); run without --resume to start it")
            saved = read_json(self.out / CONFIG)["hatrefine"]
            config = FitConfig.from_dict({**saved, **({"steps": steps} if steps is not None else {})})
        elif config is None:
            raise HatrefineError("a new fit needs its settings (a FitConfig)")
        elif self.out.exists() and any(self.out.iterdir()):
            if not overwrite:
                raise HatrefineError(f"{self.out} already holds files; pass --resume to continue that run, --overwrite to replace it, or another --out")
            shutil.rmtree(self.out)
        if config.checkpoint:
            config.checkpoint = str(Path(config.checkpoint).resolve())
        if generator is not None:
            config.generator = generator.name  # a registry spec, or the name of a Python object
        self.config = c = config
        self.device = resolve_device(c.device)
        torch.manual_seed(c.seed)

        # data -> adapter -> energy -> sampler
        self.generator = (generator or load_generator(c.generator, c.checkpoint)).to(self.device)
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
        self.step = 0
        if resume and any((self.out / d / "state.json").is_file() for d in (CKPT, CKPT + ".old")):
            self._load_checkpoint()
        elif resume:  # stopped before its first checkpoint: start again from step 0
            self._truncate_log(0)
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            save_json(self.out / CONFIG, {"hatrefine": c.to_dict(), "versions": versions()})

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
                self._append_log(rows)
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
    def _append_log(self, rows: list[dict]) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)

    def save_checkpoint(self) -> None:
        """Write the full training state to ``checkpoint.tmp/`` then swap it in, so a crash
        leaves either the old checkpoint or the new one; ``hat.safetensors`` follows."""
        tmp, final, old = self.out / (CKPT + ".tmp"), self.out / CKPT, self.out / (CKPT + ".old")
        shutil.rmtree(tmp, ignore_errors=True)
        tensors = {f"hat.{k}": v for k, v in self.hat.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()}
        opt_state = self.opt.state_dict()
        for i, s in opt_state["state"].items():
            tensors |= {f"opt.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)) for k, v in s.items()}
        tensors["rng"] = self.rng.get_state()
        tensors["torch_rng"] = torch.get_rng_state()
        save_tensors(tmp / "state.safetensors", tensors)
        save_json(tmp / "state.json", {"step": self.step, "param_groups": opt_state["param_groups"], "log_rows": self._log_rows()})
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        save_tensors(self.out / HAT_WEIGHTS, self.ema.state_dict())

    def _log_rows(self) -> int:
        path = self.out / "log.csv"
        return max(0, sum(1 for _ in open(path)) - 1) if path.exists() else 0

    def _load_checkpoint(self) -> None:
        ckpt = self.out / CKPT
        if not ckpt.is_dir() and (self.out / (CKPT + ".old")).is_dir():
            os.replace(self.out / (CKPT + ".old"), ckpt)  # crashed between the two renames
        meta = read_json(ckpt / "state.json")
        t = read_state_dict(ckpt / "state.safetensors")
        load_strict(self.hat, {k[4:]: v for k, v in t.items() if k.startswith("hat.")}, str(ckpt))
        load_strict(self.ema, {k[4:]: v for k, v in t.items() if k.startswith("ema.")}, str(ckpt))
        state: dict = {}
        for k, v in t.items():
            if k.startswith("opt."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.rng.set_state(t["rng"])
        torch.set_rng_state(t["torch_rng"])
        self.step = meta["step"]
        self._truncate_log(meta["log_rows"])

    def _truncate_log(self, n_rows: int) -> None:
        """Drop log rows written after the checkpoint (they will be written again)."""
        path = self.out / "log.csv"
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(lines[: n_rows + 1]))
