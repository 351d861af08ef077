"""The Hat EBM trainer: maximum-likelihood learning of the hat network H (paper eq. 8), on the shared loop of ``hatrefine.training.loop``.

Each step: take a data batch (plus small Gaussian noise); draw Z from the prior and run
K short-run Langevin steps from Y = 0; lower H on data, raise it on the samples:

    loss = (mean H(data) - mean H(samples)) / T

A run directory holds everything::

    config.json          every setting, generator and data spec, seed, library versions
    hat.safetensors      the EMA weights of H: what sampling and evaluation use
    sampling.json        K, T and the step sizes sampling uses (those training ended with)
    checkpoint/          H, EMA, optimizer and RNG state for --resume (replaced atomically)
    log.csv              step, loss, energies of data and samples, lr, step sizes, residual norm
    samples/             sample grids over time
    training_curve.png, before_after.png, langevin_path.png, quality.json (at the end)
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from hatrefine import distributed
from hatrefine.data import DataStream, open_dataset
from hatrefine.distributed import resolve_device
from hatrefine.errors import HatrefineError
from hatrefine.evaluation import report
from hatrefine.files.checkpoint import (
    META_FIELDS,
    RunLog,
    disk_errors,
    has_checkpoint,
    load_checkpoint,
    load_optimizer,
    load_strict,
    opening_run_dir,
    optimizer_tensors,
    save_checkpoint,
    save_tensors,
    start_run_dir,
    subdict,
)
from hatrefine.files.jsonfiles import save_json
from hatrefine.files.names import CHECKPOINT_DIR, CONFIG, HAT_WEIGHTS, SAMPLING
from hatrefine.files.quality import write_quality
from hatrefine.files.schema import versions
from hatrefine.models.refiner import HatRefiner, build_hat
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import load_generator
from hatrefine.settings.config import (
    FitConfig,
    SamplingSettings,
    read_settings,
    run_config,
)
from hatrefine.training.events import EventLog, require_tensorboard
from hatrefine.training.loop import Divergence, TrainingLoop
from hatrefine.training.resolve import Resolved, resolve, resolve_config

GROWTH_WINDOW = 50  # updates per window of the energy-growth check (--max-energy-growth)
LOG_FIELDS = [
    "step", "loss", "energy_data", "energy_samples", "lr", "eps_y", "eps_z", "residual_norm",
    "grad_data", "grad_samples", "drift_z", "drift_y", "weight_norm", "seconds_per_step",
]  # fmt: skip


def energy_gap_growth(gaps: list[float], n: int, window: int = GROWTH_WINDOW) -> Optional[float]:
    """The growth of the median energy gap |E_data - E_samples| from one window of updates to the
    next, when update ``n`` ends a window from the third on (the first window grows fast from the
    random initialisation); ``gaps``: the gaps of the last two windows. Else None."""
    if n < 3 * window or n % window or len(gaps) != 2 * window:
        return None
    before, last = statistics.median(gaps[:window]), statistics.median(gaps[window:])
    return last / before if before > 0 else math.inf


def data_gradient(energies: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """grad_x U at each of the first ``len(energies)`` images, flattened, kept in the graph: the
    input gradient that ``--grad-penalty`` holds down (a zero-centred penalty at data, R1 of
    Mescheder et al. 2018, on H and divided by T like the loss, so that its weight does not
    depend on T). Without it H's input-gradient scale grows unchecked and the
    Langevin chains cool until Y's drift outgrows its noise (docs/experiments.md)."""
    try:
        (grad,) = torch.autograd.grad(energies.sum(), images, create_graph=True)
    except RuntimeError as e:  # e.g. fused attention kernels without a double backward
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise HatrefineError(f"--grad-penalty needs the hat network's second derivative, which it does not provide ({first}); pass --grad-penalty 0") from None
    return grad[: len(energies)].flatten(1)


class Trainer(TrainingLoop):
    """Fits a hat network into ``out``; ``resume=True`` continues the run saved there exactly.

    ``run()`` (``hatrefine.training.loop``) trains, checkpointing every ``save_every`` updates; a
    diverging step (``_guard``, ``_check_growth``) rolls the run back to its last checkpoint
    with a smaller learning rate and Langevin steps (``roll_back``)."""

    name = "fit"
    config_class = FitConfig
    log_fields = LOG_FIELDS
    meta_fields = META_FIELDS | {"backoff": (int, float), "rollbacks": list, "energy_gaps": list}  # checkpoint_meta's
    meta_optional = ("backoff", "rollbacks", "energy_gaps")  # runs saved before the guard recorded them

    def __init__(
        self,
        config: FitConfig | Resolved | None,
        out: str | Path,
        generator: Optional[Generator] = None,
        resume: bool = False,
        overwrite: bool = False,
        steps: Optional[int] = None,
    ):
        """``resume=True`` takes every setting from the saved run; ``steps`` may extend it.

        Under torchrun each process is one rank of a DistributedDataParallel run (``distributed``)."""
        self.out = Path(out)
        settings = config.config if isinstance(config, Resolved) else config
        self.shard, device = distributed.setup(settings.device if settings is not None else "auto")
        with opening_run_dir(self.out, resume, overwrite, CONFIG, lock=self.shard.main):  # rank 0 holds the run's lock
            self._open(config, generator, resume, steps, device)

    def _open(self, config: FitConfig | Resolved | None, generator: Optional[Generator], resume: bool, steps: Optional[int], device: str) -> None:
        """Settings, data, networks and state (saved or new) of the run in ``self.out``."""
        self.shard.barrier()  # every rank has checked before rank 0 writes anything
        seeded = False  # a resumed run seeds here, then builds its generator
        if resume:
            config = read_settings(self.out / CONFIG, steps)  # saved settings are resolved already
            if type(config) is not self.config_class:
                command = "synthesize" if self.config_class is FitConfig else "fit"
                raise HatrefineError(f"{self.out} was not written by this command; resume it with `hatrefine {command} --resume`")
        elif config is None:
            raise HatrefineError("a new fit needs its settings (a FitConfig)")
        else:
            resolved = config if isinstance(config, Resolved) else resolve_config(config, generator)
            config, generator, seeded = resolved.config, resolved.generator, resolved.seeded
        if config.tensorboard:
            require_tensorboard()  # before anything is written
        self.config = c = config
        self.device = resolve_device(device if self.shard.world > 1 else c.device)
        self.shard.slice(c.batch_size)  # the batch must split evenly over the processes
        if not seeded:
            torch.manual_seed(c.seed)

        # data -> adapter -> energy -> sampler
        self.generator = (generator or self.make_generator()).to(self.device)
        if c.mode == "conditional":
            self.generator.require_prior()  # before any data is read or anything written
        self.data = DataStream(open_dataset(c.data, self.generator.image_shape, split="train", root=c.data_root, crop=c.data_crop), c.batch_size, c.seed)
        self.hat = build_hat(c, self.generator).to(self.device)
        self.ema = build_hat(c, self.generator).to(self.device).requires_grad_(False)
        if c.channels_last:
            self.ema.to(memory_format=torch.channels_last)
        self.ema.load_state_dict(self.hat.state_dict())
        self.refiner_train = HatRefiner(self.generator, torch.compile(self.hat) if c.compile else self.hat, c)
        self.sampler = self.refiner_train.sampler(c.langevin_steps, temperature=c.temperature, training=True)
        self.hat_ddp = self._ddp(self.hat)  # what the H update runs through (gradients averaged over ranks)
        self.opt = torch.optim.Adam(self.hat.parameters(), lr=c.lr, betas=(c.adam_beta1, 0.999))
        self.rng = torch.Generator(self.device).manual_seed(c.seed)
        self.log = RunLog(self.out / "log.csv", self.log_fields)
        self.step, self.backoff, self.rollbacks = 0, 1.0, []
        self.calibration: Optional[dict] = None  # set at the end of run() when --calibrate
        self.energy_gaps: list[float] = []  # |E_data - E_samples| of the last 2 growth windows
        self.resumed = resume and has_checkpoint(self.out)
        if self.resumed:
            self._load_state(*load_checkpoint(self.out, self.meta_fields, self.meta_optional))
        elif resume and self.shard.main:  # stopped before its first checkpoint: start again from step 0
            self.log.truncate(0)
        elif not resume and self.shard.main:
            with disk_errors(self.out):
                start_run_dir(self.out)
                save_json(self.out / CONFIG, run_config(c, versions()))
        self.events = EventLog(self.out, self.step + 1 if resume else None) if c.tensorboard and self.shard.main else None
        self.shard.barrier()

    def _ddp(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` wrapped in DistributedDataParallel under torchrun, else itself."""
        if self.shard.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)

    def make_generator(self) -> Generator:
        """The frozen generator the (resolved) settings name."""
        return load_generator(self.config.generator, self.config.checkpoint)

    # -- the loop -------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        return self.backoff * self.config.lr * self.config.lr_factor(step)

    def train_step(self) -> dict:
        """One update of H; returns the numbers that go in the log."""
        c, t0, part = self.config, time.perf_counter(), self.shard.slice(self.config.batch_size)
        data = self.data.batch(self.step)[part].to(self.device)  # this rank's slice of the global batch
        data = data + c.data_noise * torch.randn((c.batch_size, *data.shape[1:]), generator=self.rng, device=self.device)[part]
        z = self.generator.sample_latent(c.batch_size, generator=self.rng)[part]
        samples = self.sampler.sample(z, generator=self.rng, shard=self.shard, record_drift=True)

        lr = self.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        images = torch.cat([data, samples.x]).contiguous(memory_format=self.refiner_train.energy.memory_format)
        images.requires_grad_(True)  # for the input-gradient norms of the log (one extra layer of backward)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=c.amp):
            energies = self.refiner_train.energy.image_energy(images, hat=self.hat_ddp)  # one pass: DDP syncs once
        n = len(data)
        energy_data, energy_samples = energies[:n].mean(), energies[n:].mean()
        loss = energy_data - energy_samples
        if c.grad_penalty:
            grad_at_data = data_gradient(energies[:n], images)
            penalty = self.refiner_train.energy.gradient_penalty(grad_at_data, c.grad_penalty)
        self.opt.zero_grad(set_to_none=True)
        (loss + penalty if c.grad_penalty else loss).backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.hat.parameters(), c.grad_clip or math.inf)
        self._guard(loss, grad_norm, samples.y)  # before the update: a bad step never reaches the weights
        self.opt.step()
        self._update_ema()
        # ||grad_x U|| per image: the loss's input gradient is that of U divided by the batch half's size
        grad_x = images.grad.flatten(1).norm(dim=1) * n
        if c.grad_penalty:  # the data half of images.grad now holds the penalty's gradient too
            grad_x = torch.cat([grad_at_data.detach().norm(dim=1), grad_x[n:]])
        with torch.no_grad():
            weight_norm = torch.sqrt(sum(p.square().sum() for p in self.hat.parameters()))
        stats = self.shard.mean(torch.stack([loss, energy_data, energy_samples, samples.y.flatten(1).norm(dim=1).mean(), grad_x[:n].mean(), grad_x[n:].mean()]))
        self._check_growth(stats[0].item())  # after the update: a rollback undoes it
        self.step += 1
        self.last_samples = samples
        self.last_row = {
            "step": self.step,
            "loss": stats[0].item(),
            "energy_data": stats[1].item(),
            "energy_samples": stats[2].item(),
            "lr": lr,
            "eps_y": self.sampler.eps_y,
            "eps_z": self.sampler.eps_z,
            "residual_norm": stats[3].item(),
            "grad_data": stats[4].item(),
            "grad_samples": stats[5].item(),
            "drift_z": samples.drift.get("z", 0.0),
            "drift_y": samples.drift.get("y", 0.0),
            "weight_norm": weight_norm.item(),
            "seconds_per_step": time.perf_counter() - t0,
        }
        return self.last_row

    def _guard(self, loss: torch.Tensor, grad_norm: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ``Divergence`` (on every rank) on non-finite energies or gradients, or residuals past the bound."""
        rms = (y.flatten(1).norm(dim=1) / math.sqrt(y[0].numel())).max()
        reason = None
        if not torch.isfinite(loss):
            reason = f"non-finite energy ({loss.item()})"
        elif not torch.isfinite(grad_norm):
            reason = "non-finite gradient of H"
        elif not rms <= self.config.max_residual_rms:  # also catches NaN
            reason = f"residual RMS {rms.item():.3g} past --max-residual-rms {self.config.max_residual_rms}"
        if self.shard.any(reason is not None, self.device):
            raise Divergence(reason or "a step diverged on another process")

    def _check_growth(self, gap: float) -> None:
        """Raise ``Divergence`` when the energy gap grows ``max_energy_growth`` times from one
        window of updates to the next (``energy_gap_growth``): a slow blow-up that stays finite
        and keeps Y small."""
        limit = self.config.max_energy_growth
        self.energy_gaps = (self.energy_gaps + [abs(gap)])[-2 * GROWTH_WINDOW :]
        growth = energy_gap_growth(self.energy_gaps, self.step + 1, GROWTH_WINDOW)
        if growth is not None and growth > limit:
            raise Divergence(f"energy gap |E_data - E_samples| grew x{growth:.3g} in {GROWTH_WINDOW} updates (past --max-energy-growth {limit:g})")

    def roll_back(self, reason: str) -> None:
        """Return to the last checkpoint, scale the learning rate and the Langevin steps by ``--backoff``."""
        c = self.config
        failed_at, backoff, events = self.step + 1, self.backoff * c.backoff, self.rollbacks
        if len(events) >= c.max_rollbacks:
            raise HatrefineError(
                f"training diverged {len(events) + 1} times (last at step {failed_at}: {reason}); lower --lr, --eps-y or --eps-z, or raise --temperature"
            )
        self._load_state(*load_checkpoint(self.out, self.meta_fields, self.meta_optional))
        self.backoff, self.rollbacks = backoff, events + [{"step": failed_at, "reason": reason, "resumed_from": self.step, "backoff": backoff}]
        self._apply_backoff()
        if self.events:
            self.events.reopen(self.step + 1)  # the steps after the checkpoint will be logged again
        if self.shard.main:
            tqdm.write(f"step {failed_at}: {reason}; rolled back to step {self.step}, learning rate and Langevin steps now x{backoff:g}")

    def _apply_backoff(self) -> None:
        c = self.config
        self.sampler.eps_y = c.eps_y * self.backoff
        self.sampler.eps_z = c.latent_step() * self.backoff

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema, (1 + self.step) / (10 + self.step))  # warm-up: early weights fade fast
        for e, p in zip(self.ema.parameters(), self.hat.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.ema.buffers(), self.hat.buffers()):
            e.copy_(b)

    # -- the loop's per-method parts (hatrefine.training.loop) ------------------------------------
    @property
    def main(self) -> bool:
        return self.shard.main

    def sync(self) -> None:
        self.shard.barrier()

    def event_extras(self) -> tuple:
        return (len(self.rollbacks),)

    def postfix(self, row: dict) -> dict:
        return {"E_data": f"{row['energy_data']:.3g}", "E_samples": f"{row['energy_samples']:.3g}", "s_per_step": f"{row['seconds_per_step']:.2f}"}

    def after_step(self) -> None:
        if self.main and (self.step % self.config.sample_every == 0 or self.step == self.config.steps):
            report.save_grid(self.last_samples.x, self.out / "samples" / f"step_{self.step:06d}.png")
            if self.events:
                self.events.image("samples", report.grid(self.last_samples.x), self.step)

    def finish(self, progress: bool) -> None:
        """The training curve, the calibration (``--calibrate``) and the before/after report."""
        c = self.config
        report.training_curve(self.out / "log.csv", self.out / "training_curve.png", self.rollbacks, c.max_energy_growth, GROWTH_WINDOW)
        self.calibration = self.calibrate(self.refiner()) if c.calibrate else None
        if c.eval_samples:
            report.before_after(self.refiner(), self.out, n=c.eval_samples, seed=c.seed, calibration=self.calibration, progress=progress)
        elif self.calibration is not None:
            write_quality(self.out, {"calibration": self.calibration})

    def calibrate(self, refiner: HatRefiner) -> dict:
        """Choose the test-time T and K on held-out data (``hatrefine.evaluation.calibration``) and write them to
        ``sampling.json``; ``refiner()`` samples with them from then on. Without a quick metric (no Inception weights on
        disk for non-digit images) say so and keep the config's values."""
        from hatrefine.evaluation.calibration import calibrate, quick_metric_net

        c = self.config
        try:
            quick_metric_net(self.generator.image_shape, self.device, inception_on_cpu=False)
        except HatrefineError as e:
            tqdm.write(f"calibration skipped ({e}); sampling keeps the config's T and K")
            return {"skipped": str(e)}
        record = calibrate(refiner, c.data, c.data_root, n=c.calibration_samples, seed=c.seed)
        save_json(self.out / SAMPLING, refiner.sampling.calibrated(record).to_dict())
        pick = record["chosen"]
        check = (
            ""
            if record["metric"] == "inception"
            else f"; `hatrefine calibrate --run {self.out} --metric inception --overwrite` chooses again in FID's features"
        )
        tqdm.write(
            f"calibration in {record['metric']} features: sampling at T {pick['temperature']:.4g} (training T x {pick['temperature'] / c.temperature:.3g}), K {pick['langevin_steps']}"
            + ("" if record["keeps_recall"] else "; no setting kept the generator's recall and coverage: chose the one losing least")
            + check
        )
        return record

    def refiner(self) -> HatRefiner:
        """The fitted model with the EMA weights, the step sizes training ended with and, once the
        fit has calibrated, the chosen T and K: what sampling uses."""
        sampling = self.sampling_settings()
        if self.calibration and "chosen" in self.calibration:
            sampling = sampling.calibrated(self.calibration)
        return HatRefiner(self.generator, self.ema, self.config, sampling)

    def sampling_settings(self) -> SamplingSettings:
        """The config's test-time K and T with the step sizes as training left them (after every ``--backoff``)."""
        c, s = self.config, SamplingSettings.from_config(self.config)
        s.eps_y, s.eps_z = self.sampler.eps_y, self.sampler.eps_z
        for r in self.rollbacks:
            s.step_size_history.append(
                {"step": r["step"], "eps_y": c.eps_y * r["backoff"], "eps_z": s.step_size_history[0]["eps_z"] * r["backoff"], "reason": r["reason"]}
            )
        return s

    # -- persistence ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a resumed run needs, as flat tensors (subclasses add theirs)."""
        opt, self._param_groups = optimizer_tensors(self.opt, "opt")
        tensors = {f"hat.{k}": v for k, v in self.hat.state_dict().items()}
        tensors |= {f"ema.{k}": v for k, v in self.ema.state_dict().items()} | opt
        return tensors | {"rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}

    def save_checkpoint(self) -> None:
        """Swap in a new ``checkpoint/`` (atomically), then write ``hat.safetensors``.

        Raises ``Divergence`` (and writes nothing) if any weight is not finite."""
        tensors = self.state_tensors()
        bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise Divergence(f"non-finite weights ({', '.join(bad[:3])})")
        if self.shard.main:
            save_checkpoint(self.out, tensors, self.checkpoint_meta())
            save_tensors(self.out / HAT_WEIGHTS, self.ema.state_dict())
            save_json(self.out / SAMPLING, self.sampling_settings().to_dict())
        self.shard.barrier()

    def checkpoint_meta(self) -> dict:
        """The JSON half of a checkpoint (after ``state_tensors``)."""
        return {
            "step": self.step,
            "param_groups": self._param_groups,
            "log_rows": self.log.n_rows(),
            "backoff": self.backoff,
            "rollbacks": self.rollbacks,
            "energy_gaps": self.energy_gaps,
        }

    def _load_state(self, t: dict[str, torch.Tensor], meta: dict) -> None:
        source = str(self.out / CHECKPOINT_DIR)
        load_strict(self.hat, subdict(t, "hat"), source)
        load_strict(self.ema, subdict(t, "ema"), source)
        load_optimizer(self.opt, t, "opt", meta["param_groups"])
        self.rng.set_state(t["rng"])
        torch.set_rng_state(t["torch_rng"])
        self.step = meta["step"]
        self.backoff, self.rollbacks = meta.get("backoff", 1.0), meta.get("rollbacks", [])
        self.energy_gaps = list(meta.get("energy_gaps", []))
        self._apply_backoff()
        if self.shard.main:
            self.log.truncate(meta["log_rows"])


def fit(out: str | Path, generator: Optional[Generator] = None, resume: bool = False, overwrite: bool = False, progress: bool = True, **settings) -> HatRefiner:
    """Fit a hat network (see ``FitConfig`` for ``settings``) into run directory ``out``; returns the fitted ``HatRefiner``.

    Settings resolve as on the command line (``hatrefine.training.resolve``): a generator spec with a
    recipe selects it. With ``resume=True`` the saved run's settings are used; only ``steps`` may be given.
    """
    if resume:
        if set(settings) - {"steps"}:
            raise HatrefineError(f"a resumed run keeps its saved settings; only steps may change, got {sorted(settings)}")
        trainer = Trainer(None, out, generator=generator, resume=True, steps=settings.get("steps"))
    else:
        trainer = Trainer(resolve(FitConfig, settings, generator=generator), out, overwrite=overwrite)
    trainer.run(progress=progress)
    return trainer.refiner()
