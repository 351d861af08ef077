"""Distillation: a latent map T learned so that G(T(z)), z ~ N(0, I), is distributed as a fitted
run's refined samples at its calibrated T and K, so that refined samples cost one generator pass.

Every update draws a batch of latents z0, runs the run's own sampler from them (the chains
the run samples with), and moves T toward its end points:

- ``regression``: ||T(z0) - z_K||^2, each chain's start mapped onto its own end, as the
  generator step of cooperative learning (Xie et al. 2018) maps a generator's sample onto the
  Langevin-revised one;
- ``mmd``: the squared maximum mean discrepancy between G(T(z0')) for other latents and the
  chains' images, RBF kernels at the median pixel distance times 0.5, 1 and 2 (a
  distribution match that does not pair starts with ends).
- ``energy``: no chains; T(z0) lowers the run's energy U(G(T(z0))) plus ||T(z0) - z0||^2 / (K eps_z^2),
  the point that K gradient steps of size eps_z^2 / 2 reach from z0 (a proximal step), amortised
  over z0: an amortised sampler whose spread comes from z0's while the proximal term is strong
  (short-run chains); where the chains mix, it collapses toward the energy's modes (the Gaussian test).

The residual Y is not distilled (the output is G(T(z))): on the embedded GAN it carries only
its noise at the fit's eps_y (docs/experiments.md). G stays frozen; T starts as the identity.

A distilled generator directory::

    config.json         {"generator": {"architecture": "distilled_generator", "kwargs": {base, latent_shape, width, depth, checkpoint}, ...},
                         "distilled": settings, "distilled_from": {run, sampling, generator}, "versions"}
    model.safetensors   T's weights (the base generator is rebuilt from its spec)
    README.md           what it was distilled from, with which settings, and the before/after line
    checkpoint/, log.csv
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from hatrefine.errors import HatrefineError
from hatrefine.files.checkpoint import (
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
from hatrefine.files.jsonfiles import read_json, save_json
from hatrefine.files.names import CONFIG, MODEL_WEIGHTS
from hatrefine.files.schema import FORMAT_VERSION, check_version, settings_from_dict, versions
from hatrefine.sampling.langevin import LangevinSampler
from hatrefine.settings.distill import DistillConfig
from hatrefine.training.loop import TrainingLoop
from hatrefine.training.resolve import Resolved

KEY = "distilled"  # where config.json keeps the settings


def sampling_record(sampling) -> dict:
    """The sampler settings a run's refined distribution came from (a ``SamplingSettings``, or any object's public fields)."""
    return dataclasses.asdict(sampling) if dataclasses.is_dataclass(sampling) else dict(vars(sampling))


def mmd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared MMD between two batches (flattened), RBF kernels at 0.5, 1 and 2 times the median distance."""
    a, b = a.flatten(1), b.flatten(1)
    both = torch.cat([a, b])
    d2 = torch.cdist(both, both).square()
    scale = d2.detach().median().clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (scale * f)) for f in (0.25, 1.0, 4.0))
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class DistillTrainer(TrainingLoop):
    """Distils ``refiner`` (a fitted run's model; default: ``config.run`` loaded) into ``out``; ``resume=True`` continues exactly."""

    name = "distill"

    def __init__(
        self, config: Optional[DistillConfig], out: str | Path, resume: bool = False, overwrite: bool = False, steps: Optional[int] = None, refiner=None
    ):
        self.out = Path(out)
        with opening_run_dir(self.out, resume, overwrite, CONFIG):
            self._open(config, resume, steps, refiner)

    def _open(self, config: Optional[DistillConfig], resume: bool, steps: Optional[int], refiner) -> None:
        from hatrefine.distributed import resolve_device
        from hatrefine.models.runs import load_run

        if resume:
            saved = read_json(self.out / CONFIG)
            check_version(saved, str(self.out / CONFIG))
            if not isinstance(saved.get(KEY), dict):
                raise HatrefineError(f"{self.out} is not a distilled generator directory (no '{KEY}' in {CONFIG}); pass the --out of distill")
            config = settings_from_dict(DistillConfig, {**saved[KEY], **({"steps": steps} if steps is not None else {})}, str(self.out / CONFIG))
        elif config is None:
            raise HatrefineError("a new distillation needs its settings (a DistillConfig)")
        self.config = c = config.config if isinstance(config, Resolved) else config
        self.device = resolve_device(c.device)
        self.refiner = refiner if refiner is not None else load_run(c.run, device=str(self.device))
        sampling = self.refiner.sampling
        if getattr(sampling, "chosen_by", "calibration") != "calibration":
            raise HatrefineError(
                f"{c.run} has no calibration, so there is no refined distribution to distil yet; run `hatrefine calibrate --run {c.run}` first"
            )
        G = self.generator = self.refiner.generator
        torch.manual_seed(c.seed)
        from hatrefine.networks.latent_map import LatentMap

        self.map = LatentMap(G.latent_shape, c.width, c.depth).to(self.device)
        self.opt = torch.optim.Adam(self.map.parameters(), lr=c.lr)
        self.sampler = self.refiner.sampler()
        if c.method == "energy" and not (isinstance(self.sampler, LangevinSampler) and self.sampler.eps_z > 0):
            raise HatrefineError(f"--method energy needs a run whose chains move Z (a joint Hat EBM); {c.run}'s do not: use --method regression or mmd")
        self.rng = torch.Generator(self.device).manual_seed(c.seed)
        self.log = RunLog(self.out / "log.csv", ["step", "loss", "latent_move", "seconds_per_step"])
        self.step, self.events = 0, None
        if resume and has_checkpoint(self.out):
            self._load_state(*load_checkpoint(self.out))
        elif not resume:
            with disk_errors(self.out):
                start_run_dir(self.out)
                save_json(self.out / CONFIG, self.directory_config())

    @property
    def parameters_share(self) -> float:
        """T's parameters as a share of the generator's."""
        g = sum(p.numel() for p in self.generator.parameters())
        return sum(p.numel() for p in self.map.parameters()) / max(1, g)

    def directory_config(self) -> dict:
        from hatrefine.networks.registry import absolute_spec

        c, G = self.config, self.generator
        checkpoint = getattr(self.refiner.config, "checkpoint", None)
        kwargs = {"base": absolute_spec(G.name), "latent_shape": list(G.latent_shape), "width": c.width, "depth": c.depth, "checkpoint": checkpoint}
        return {
            "format_version": FORMAT_VERSION,
            "generator": {
                "architecture": "distilled_generator",
                "kwargs": kwargs,
                "latent_shape": list(G.latent_shape),
                "image_shape": list(G.image_shape),
                "prior": "normal",
                "value_range": None,
            },
            KEY: c.to_dict(),
            "distilled_from": {"run": c.run, "generator": G.name, "sampling": sampling_record(self.refiner.sampling)},
            "versions": versions(),
        }

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        c, G = self.config, self.generator
        z0 = G.sample_latent(c.batch_size, generator=self.rng)
        end = None if c.method == "energy" else self.sampler.sample(z0, generator=self.rng)
        if c.method == "mmd":  # matched on other latents: starts are not paired with ends
            z0 = G.sample_latent(c.batch_size, generator=self.rng)
        mapped = self.map(z0)
        if c.method == "energy":
            loss = self.proximal_energy(z0, mapped)
        elif c.method == "regression":
            loss = F.mse_loss(mapped, end.z.detach())
        else:
            loss = mmd(G(mapped), end.x.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward(inputs=list(self.map.parameters()))  # G and H stay frozen, their gradients untouched
        self.opt.step()
        self.step += 1
        move = (mapped.detach() - z0).flatten(1).norm(dim=1).mean().item()  # before this update: no second pass of T
        return {"step": self.step, "loss": loss.item(), "latent_move": move, "seconds_per_step": time.perf_counter() - t0}

    def proximal_energy(self, z0: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
        """Mean of U(0, G(T(z0)), T(z0)) + ||T(z0) - z0||^2 / (K eps_z^2) (``energy``'s loss)."""
        s = self.sampler
        g = self.generator(mapped)
        u = s.energy(torch.zeros_like(g), g, mapped).float()
        return (u + (mapped - z0).flatten(1).square().sum(1) / (s.n_steps * s.eps_z**2)).mean()

    def postfix(self, row: dict) -> dict:
        return {"loss": f"{row['loss']:.4g}", "move": f"{row['latent_move']:.3f}"}

    def finish(self, progress: bool) -> None:
        """The model card, with the before/after line when ``eval_samples``."""
        line = self.quality_line() if self.config.eval_samples else ""
        c = self.config
        card = [
            f"# Distilled generator: {self.generator.name} behind a learned latent map",
            "",
            f"Distilled by `hatrefine distill` from the run `{c.run}` (its sampler at T {self.refiner.sampling.temperature:g}, K {self.refiner.sampling.langevin_steps}),",
            f"method {c.method}, {c.steps} updates at batch {c.batch_size}, Adam {c.lr:g}, T an {'MLP' if len(self.generator.latent_shape) == 1 else 'conv net'} of {c.depth} x {c.width}",
            f"({100 * self.parameters_share:.1f}% of the generator's parameters). Load it as `dir:{self.out}`.",
            "",
            line,
        ]
        (self.out / "README.md").write_text("\n".join(card).rstrip() + "\n")

    @torch.no_grad()
    def quality_line(self) -> str:
        """Quick-metric distances of G(z), the run's chains and G(T(z)) from the same z against the data's training split."""
        from hatrefine.evaluation.metrics import feature_scores, features, load_classifier, quick_net

        G, n = self.generator, self.config.eval_samples
        spec = quick_net(G.image_shape)
        data = getattr(self.refiner.config, "data", None)
        if spec is None or data is None:
            return ""
        from hatrefine.data import load_images

        net = load_classifier(G.image_shape).to(self.device)
        real = features(net, load_images(data, G.image_shape, split="train"))
        z = G.sample_latent(n, generator=torch.Generator(self.device).manual_seed(self.config.seed + 1))
        with torch.enable_grad():
            chains = torch.cat([self.sampler.sample(part, generator=self.rng).x for part in z.split(250)])
        sets = {"generator": torch.cat([G(p) for p in z.split(250)]), "chains": chains, "distilled": torch.cat([G(self.map(p)) for p in z.split(250)])}
        fd = {k: feature_scores(net, real, x)["fd"] for k, x in sets.items()}
        gain = fd["generator"] - fd["chains"]
        kept = (
            f"keeps {100 * (fd['generator'] - fd['distilled']) / gain:.0f}% of the chains' gain"
            if gain > 0
            else "the chains do not improve on the generator here"
        )
        line = (
            f"quality (Frechet distance in {spec.label} features, {n} samples vs {len(real)} training {spec.items}): generator {fd['generator']:.3f}, "
            f"the run's chains {fd['chains']:.3f}, distilled generator {fd['distilled']:.3f} ({kept})"
        )
        print(line)
        return line

    # -- persistence ----------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        opt, groups = optimizer_tensors(self.opt, "opt")
        tensors = {f"map.{k}": v for k, v in self.map.state_dict().items()} | opt
        tensors |= {"rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}
        save_checkpoint(self.out, tensors, {"step": self.step, "param_groups": groups, "log_rows": self.log.n_rows()})
        save_tensors(self.out / MODEL_WEIGHTS, {f"map.{k}": v for k, v in self.map.state_dict().items()})

    def _load_state(self, t: dict[str, torch.Tensor], meta: dict) -> None:
        load_strict(self.map, subdict(t, "map"), str(self.out))
        load_optimizer(self.opt, t, "opt", meta["param_groups"])
        self.rng.set_state(t["rng"])
        torch.set_rng_state(t["torch_rng"])
        self.step = meta["step"]
        self.log.truncate(meta["log_rows"])


def distill(refiner, out: str | Path, resume: bool = False, overwrite: bool = False, progress: bool = True, **settings):
    """Distil a fitted model (a run directory, or a loaded ``HatRefiner`` or ``LatentPriorRefiner``;
    ``settings``: ``DistillConfig``'s) into the generator directory ``out``; returns the distilled
    generator (what ``dir:OUT`` loads). ``hatrefine.distill``: a function beside ``fit``, since
    fitted models sit below training in the layering."""
    from hatrefine.networks.registry import load_generator

    if isinstance(refiner, (str, Path)):
        settings, refiner = {"run": str(refiner), **settings}, None
    trainer = DistillTrainer(None if resume else DistillConfig(**settings), out, resume=resume, overwrite=overwrite, refiner=refiner)
    trainer.run(progress=progress)
    return load_generator(f"dir:{out}")
