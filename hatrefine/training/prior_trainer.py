"""``hatrefine fit-prior``: learn a latent-space EBM prior on a frozen generator by maximum likelihood.

Each step: a data batch x; posterior samples z+ of z given x (Langevin on the posterior
energy, started from N(0, I), an inversion, or the chain's last end for that image: ``--posterior-init``);
prior samples z- (Langevin on ||z||^2 / 2 - f(z), G never runs); the loss mean f(z-) - mean f(z+)
moves f up where data latents are and down where the prior puts mass they do not use. G stays frozen.

A run directory::

    config.json          {"latent_prior": settings, "versions"}
    prior.safetensors    f, what sampling uses
    checkpoint/          f, optimizer, RNG state (and the persistent chains) for --resume
    log.csv              step, loss, f at posterior and prior samples, reconstruction MSE, lr, seconds
    before_after.png     G(z) for z ~ N(0, I) and the same z moved along the prior chain
    quality.json         the before/after numbers (digits: Frechet distance in LeNet features, PRDC)
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

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
from hatrefine.files.names import CONFIG, PRIOR_WEIGHTS
from hatrefine.files.schema import FORMAT_VERSION, versions
from hatrefine.models.latent_prior import (
    LatentPriorRefiner,
    build_energy,
)
from hatrefine.models.pretrained import load_run_generator, located
from hatrefine.models.refiner import invert_latents
from hatrefine.networks.generator import Generator
from hatrefine.settings.prior import KEY, PriorConfig, read_prior_settings
from hatrefine.training.events import EventLog, require_tensorboard
from hatrefine.training.loop import Divergence, TrainingLoop
from hatrefine.training.resolve import Resolved, resolve, resolve_config

LOG_FIELDS = ["step", "loss", "f_posterior", "f_prior", "recon_mse", "lr", "seconds_per_step"]
INVERSION_STEPS = 50  # Adam steps of --posterior-init inversion


class PriorTrainer(TrainingLoop):
    """Fits a latent EBM prior into ``out``; ``resume=True`` continues it exactly (``run()``: ``hatrefine.training.loop``).

    A non-finite loss or energy rolls the run back to its last checkpoint with the learning rate
    times ``--backoff`` (at most ``--max-rollbacks`` times)."""

    name = "fit-prior"
    config_class = PriorConfig
    config_key = KEY
    log_fields = LOG_FIELDS
    meta_fields = META_FIELDS | {"lr_factor": (int, float), "rollbacks": list}  # checkpoint_meta's

    def __init__(
        self,
        config: PriorConfig | Resolved | None,
        out: str | Path,
        resume: bool = False,
        overwrite: bool = False,
        steps: Optional[int] = None,
        generator: Optional[Generator] = None,
    ):
        self.out = Path(out)
        with opening_run_dir(self.out, resume, overwrite, CONFIG):
            self._open(config, resume, steps, generator)

    def _open(self, config: PriorConfig | Resolved | None, resume: bool, steps: Optional[int], generator: Optional[Generator]) -> None:
        seeded = False  # a resumed run seeds here, then builds its generator
        if resume:
            config = read_prior_settings(self.out, self.config_class, self.config_key, steps)  # saved settings are resolved already
        elif config is None:
            raise HatrefineError(f"a new run needs its settings (a {self.config_class.__name__})")
        else:
            resolved = config if isinstance(config, Resolved) else resolve_config(config, generator)
            config, generator, seeded = resolved.config, resolved.generator, resolved.seeded
        if config.tensorboard:
            require_tensorboard()  # before anything is written
        self.config = c = config
        self.device = resolve_device(c.device)
        if not seeded:
            torch.manual_seed(c.seed)
        self.generator = (generator or self.make_generator()).to(self.device)
        self.generator.require_prior()
        self.data = DataStream(open_dataset(c.data, self.generator.image_shape, split="train", root=c.data_root), c.batch_size, c.seed)
        self.energy = build_energy(c, self.generator).to(self.device)
        self.model = LatentPriorRefiner(self.generator, self.energy, c)
        self.opt = torch.optim.Adam(self.trained_parameters(), lr=c.lr, betas=(c.adam_beta1, 0.999))
        self.rng = torch.Generator(self.device).manual_seed(c.seed)
        self.chains = self.generator.sample_latent(len(self.data.dataset), generator=self.rng) if c.posterior_init == "persistent" else None
        self.log = RunLog(self.out / "log.csv", self.log_fields)
        self.step, self.lr_factor, self.rollbacks = 0, 1.0, []
        if resume and has_checkpoint(self.out):
            self._load_state(*load_checkpoint(self.out, self.meta_fields))
        elif not resume:
            with disk_errors(self.out):
                start_run_dir(self.out)
                save_json(self.out / CONFIG, self.run_config())
        self.events = EventLog(self.out, self.step + 1 if resume else None) if c.tensorboard else None

    def make_generator(self) -> Generator:
        return load_run_generator(located(self.config, self.out), self.out)

    def trained_parameters(self) -> list:
        return list(self.energy.parameters())

    def run_config(self) -> dict:
        return {"format_version": FORMAT_VERSION, KEY: self.config.to_dict(), "versions": versions()}

    # -- one update ---------------------------------------------------------------------------
    def posterior_start(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.posterior_init == "persistent":
            return self.chains[idx.to(self.chains.device)]
        if c.posterior_init == "inversion":
            return invert_latents(self.generator, x, INVERSION_STEPS, seed=self.step)
        return self.generator.sample_latent(len(x), generator=self.rng)

    def chains_for(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior samples for ``x`` and as many prior samples."""
        m = self.model
        z_pos = m.infer(x, self.posterior_start(x, idx), generator=self.rng)
        if self.chains is not None:
            self.chains[idx.to(self.chains.device)] = z_pos
        z_neg = m.sampler(self.config.prior_steps).chain.sample(self.generator.sample_latent(len(x), generator=self.rng), m.prior_energy, self.rng)[0]
        return z_pos, z_neg

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        idx = self.data.indices(self.step)
        x = self.data.batch(self.step).to(self.device)
        z_pos, z_neg = self.chains_for(x, idx)
        f_pos, f_neg = self.model.f(z_pos), self.model.f(z_neg)
        loss = f_neg.mean() - f_pos.mean()
        row = self.update(loss, x, z_pos, z_neg)
        if not all(math.isfinite(v) for v in (loss.item(), f_pos.mean().item(), f_neg.mean().item())):
            raise Divergence(f"non-finite energy (f at posterior {f_pos.mean().item():.4g}, at prior {f_neg.mean().item():.4g})")
        with torch.no_grad():
            mse = (x - self.generator(z_pos)).square().mean().item()
        self.step += 1
        return {
            "step": self.step,
            "loss": loss.item(),
            "f_posterior": f_pos.mean().item(),
            "f_prior": f_neg.mean().item(),
            "recon_mse": mse,
            "lr": self.opt.param_groups[0]["lr"],
            "seconds_per_step": time.perf_counter() - t0,
        } | row

    def update(self, loss: torch.Tensor, x: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor) -> dict:
        """One optimizer step on ``loss`` (a subclass adds its own terms and returns their log values)."""
        if not torch.isfinite(loss):
            return {}  # train_step raises Divergence before anything is applied
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {}

    def set_lr(self, factor: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.config.lr * factor

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.3g}", "mse": f"{row['recon_mse']:.4f}"}

    def roll_back(self, reason: str) -> None:
        """Return to the last checkpoint with the learning rate times ``--backoff``."""
        c, failed_at = self.config, self.step + 1
        if len(self.rollbacks) >= c.max_rollbacks:
            raise HatrefineError(
                f"training diverged {len(self.rollbacks) + 1} times (last at step {failed_at}: {reason}); lower --lr or the Langevin step sizes"
            )
        rollbacks, factor = self.rollbacks, self.lr_factor * c.backoff
        self._load_state(*load_checkpoint(self.out, self.meta_fields))
        self.rollbacks, self.lr_factor = rollbacks + [{"step": failed_at, "reason": reason, "resumed_from": self.step, "lr_factor": factor}], factor
        self.set_lr(factor)
        if self.events:
            self.events.reopen(self.step + 1)
        tqdm.write(f"step {failed_at}: {reason}; rolled back to step {self.step}, learning rate now x{factor:g}")

    def after_step(self) -> None:
        if self.step % self.config.save_every == 0:
            report.save_grid(self.model.sample(64, seed=self.config.seed, batch_size=64).x, self.out / "samples" / f"step_{self.step:06d}.png")

    def finish(self, progress: bool) -> None:
        if self.config.eval_samples:
            report.before_after(self.model, self.out, n=self.config.eval_samples, seed=self.config.seed, progress=progress)

    # -- persistence ------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        opt, self._param_groups = optimizer_tensors(self.opt, "opt")
        tensors = {f"energy.{k}": v for k, v in self.energy.state_dict().items()} | opt
        tensors |= {"rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}
        return tensors | ({"chains": self.chains} if self.chains is not None else {})

    def save_checkpoint(self) -> None:
        tensors = self.state_tensors()
        save_checkpoint(self.out, tensors, self.checkpoint_meta())
        save_tensors(self.out / PRIOR_WEIGHTS, self.energy.state_dict())

    def checkpoint_meta(self) -> dict:
        return {"step": self.step, "param_groups": self._param_groups, "log_rows": self.log.n_rows(), "lr_factor": self.lr_factor, "rollbacks": self.rollbacks}

    def _load_state(self, t: dict[str, torch.Tensor], meta: dict) -> None:
        load_strict(self.energy, subdict(t, "energy"), str(self.out))
        load_optimizer(self.opt, t, "opt", meta["param_groups"])
        self.rng.set_state(t["rng"])
        torch.set_rng_state(t["torch_rng"])
        if self.chains is not None:
            self.chains = t["chains"].to(self.device)
        self.step, self.lr_factor, self.rollbacks = meta["step"], meta["lr_factor"], meta["rollbacks"]
        self.log.truncate(meta["log_rows"])


def fit_prior(
    out: str | Path, generator: Optional[Generator] = None, resume: bool = False, overwrite: bool = False, progress: bool = True, **settings
) -> LatentPriorRefiner:
    """Fit a latent EBM prior (``PriorConfig`` settings as keywords) and return it."""
    if resume:
        if set(settings) - {"steps"}:
            raise HatrefineError(f"a resumed run keeps its saved settings; only steps may change, got {sorted(settings)}")
        trainer = PriorTrainer(None, out, resume=True, steps=settings.get("steps"), generator=generator)
    else:
        trainer = PriorTrainer(resolve(PriorConfig, settings, generator=generator), out, overwrite=overwrite)
    trainer.run(progress=progress)
    return trainer.model
