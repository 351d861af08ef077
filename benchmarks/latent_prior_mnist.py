"""The rival family on the embedded default: latent-space EBM priors next to the Hat EBM.

Three parts, each written to the JSON as soon as it is measured (rerun to resume: finished
fits are reused, ``--redo`` refits):

1. ``refine``: a latent EBM prior (``fit-prior``, default settings) on the embedded GAN, sampled
   from the latents of the published refinement benchmark (``refine_mnist.py``: ``--seed``'s
   2,000 latents, the same reference); the generator is measured again on those latents so the
   protocol is checked against ``refine_mnist.json`` (its DDLS and Hat EBM rows are quoted from there).
2. ``hierarchical``: the two-layer generator with its joint prior learned from scratch
   (``hierarchical``, default settings): FID of its samples without and with the EBM prior,
   reconstruction MSE of posterior inference on held-out digits, fit seconds; OOD AUROC of both
   latent-prior runs on the offline OOD sets, next to the Hat EBM's (``ood_mnist.json``).
3. ``cost``: seconds per update of a latent-prior fit against a Hat EBM fit on the same
   generator (default settings of each), and how it grows with the posterior chain's length.

    python benchmarks/latent_prior_mnist.py --json benchmarks/results/latent_prior_mnist.json
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
from common import header, inception_fids, measured, write_json

from hatrefine.data import load_images
from hatrefine.distributed import resolve_device
from hatrefine.evaluation.ood import ood_scores
from hatrefine.models.latent_prior import LatentPriorRefiner
from hatrefine.settings.config import FitConfig
from hatrefine.settings.prior import HierarchicalConfig, PriorConfig
from hatrefine.training.hierarchical import HierarchicalTrainer
from hatrefine.training.prior_trainer import PriorTrainer
from hatrefine.training.trainer import Trainer

DATA, GENERATOR = "builtin:mnist", "builtin:mnist"
OOD_SETS = ["invert:builtin:mnist", "sklearn:digits", "noise:gaussian", "noise:uniform"]
RESULTS = Path(__file__).resolve().parent / "results"


def fitted(trainer_class, config, run: Path, redo: bool) -> tuple[object, float]:
    """A finished run in ``run`` (fitted now, or reused) and its fit seconds."""
    seconds_file = run / "benchmark_fit.json"
    if redo or not seconds_file.is_file():
        record: dict = {}
        with measured(record):
            trainer = trainer_class(config, run, overwrite=True)
            trainer.run(progress=False)
        seconds_file.write_text(json.dumps(record))
    return LatentPriorRefiner.from_pretrained(run), json.loads(seconds_file.read_text())["seconds"]


def samples(model: LatentPriorRefiner, z0: torch.Tensor, seed: int, batch_size: int = 250) -> tuple[torch.Tensor, float]:
    """The prior chain from each of ``z0`` (then G), and the wall seconds it took."""
    sampler, t0 = model.sampler(), time.perf_counter()
    x = torch.cat([sampler.sample(z0[s : s + batch_size], generator=torch.Generator().manual_seed(seed + s)).x for s in range(0, len(z0), batch_size)])
    return x, round(time.perf_counter() - t0, 1)


def ood(model, n: int) -> dict:
    summary, _ = ood_scores(model, DATA, OOD_SETS, split="test", n=n)
    return {row["data"]: round(row["auroc"], 4) for row in summary["ood"]}


def part_refine(args, result: dict, device) -> None:
    model, fit_seconds = fitted(
        PriorTrainer, PriorConfig(seed=args.seed, device=args.device, eval_samples=0, steps=args.prior_fit_steps), Path(args.run_dir) / "prior", args.redo
    )
    G = model.generator
    z0 = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed))  # refine_mnist.py's latents
    with torch.no_grad():
        generator = torch.cat([G(z) for z in z0.split(250)])
    prior, sample_seconds = samples(model, z0, args.seed)
    scores, reference = inception_fids({"generator": generator, "latent_prior": prior}, DATA, args.inception, device)
    published = json.loads((RESULTS / "refine_mnist.json").read_text())
    result["refine"] = reference | {
        "n_samples": args.n,
        "settings": model.config.to_dict(),
        "fit_seconds": fit_seconds,
        "langevin_steps": model.sampling.langevin_steps,
        "rows": {"generator": scores["generator"], "latent_prior": scores["latent_prior"] | {"sample_seconds": sample_seconds}},
        "quoted_from_refine_mnist_json": {k: published["rows"][k] for k in ("ddls", "ddls_calibrated", "hat")}
        | {"generator_fid_there": published["fid_generator"], "hat_fit_seconds": published["fit_seconds"], "hat_langevin_steps": published["langevin_steps"]},
    }


def part_hierarchical(args, result: dict, device) -> None:
    config = HierarchicalConfig(seed=args.seed, device=args.device, eval_samples=0, steps=args.hierarchical_steps)
    model, fit_seconds = fitted(HierarchicalTrainer, config, Path(args.run_dir) / "hierarchical", args.redo)
    G = model.generator
    z0 = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed))
    with torch.no_grad():
        without = torch.cat([G(z) for z in z0.split(250)])
    with_prior, sample_seconds = samples(model, z0, args.seed)
    scores, reference = inception_fids({"without_prior": without, "with_prior": with_prior}, DATA, args.inception, device)
    test = load_images(DATA, G.image_shape, split="test", limit=500)
    z = torch.cat([model.infer(x, generator=torch.Generator().manual_seed(args.seed)) for x in test.split(250)])
    with torch.no_grad():
        mse = (test - torch.cat([G(v) for v in z.split(250)])).square().mean().item()
    result["hierarchical"] = reference | {
        "n_samples": args.n,
        "settings": config.to_dict(),
        "fit_seconds": fit_seconds,
        "rows": {"without_prior": scores["without_prior"], "with_prior": scores["with_prior"] | {"sample_seconds": sample_seconds}},
        "reconstruction_mse_test": round(mse, 5),
        "posterior_steps": model.config.posterior_steps,
    }
    prior = LatentPriorRefiner.from_pretrained(Path(args.run_dir) / "prior")
    hat = json.loads((RESULTS / "ood_mnist.json").read_text())
    result["ood"] = {
        "split": "test",
        "n_per_set": args.ood_n,
        "hierarchical": ood(model, args.ood_n),
        "latent_prior_on_gan": ood(prior, args.ood_n),
        "hat_ebm_quoted_from_ood_mnist_json": {row["data"]: round(row["auroc"], 4) for row in hat["ood"]},
    }


def part_cost(args, result: dict) -> None:
    steps, rows = args.cost_updates, {}
    runs = {"hat_ebm": (Trainer, FitConfig(steps=steps, eval_samples=0, calibrate=False, device=args.device, save_every=steps))}
    for k in args.posterior_lengths:
        runs[f"latent_prior_posterior_{k}"] = (PriorTrainer, PriorConfig(steps=steps, posterior_steps=k, eval_samples=0, device=args.device, save_every=steps))
    for name, (trainer_class, config) in runs.items():
        trainer = trainer_class(config, Path(args.run_dir) / f"cost-{name}", overwrite=True)
        trainer.run(progress=False)
        with open(trainer.out / "log.csv") as f:
            times = [float(r["seconds_per_step"]) for r in csv.DictReader(f)][2:]  # the first two updates warm up
        seconds = sum(times) / len(times)
        rows[name] = {"seconds_per_update": round(seconds, 3)}
        print(name, rows[name], flush=True)
    result["cost"] = {
        "updates_timed": steps - 2,
        "rows": rows,
        "hat_ebm_settings": "FitConfig defaults (the main job's)",
        "latent_prior_settings": "PriorConfig defaults but posterior_steps",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="samples per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default="runs/latent-prior-mnist")
    p.add_argument("--parts", default="refine,hierarchical,cost")
    p.add_argument("--prior-fit-steps", type=int, default=PriorConfig.steps, help="updates of the latent prior on the GAN")
    p.add_argument("--hierarchical-steps", type=int, default=1000)
    p.add_argument("--ood-n", type=int, default=500, help="images scored per OOD set")
    p.add_argument("--cost-updates", type=int, default=12, help="updates timed per setting (the first two not counted)")
    p.add_argument("--posterior-lengths", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--redo", action="store_true", help="fit again even where a finished run exists")
    p.add_argument("--inception", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device = resolve_device(args.device)
    result = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    result |= header(args, device)
    for part in args.parts.split(","):
        {
            "refine": lambda: part_refine(args, result, device),
            "hierarchical": lambda: part_hierarchical(args, result, device),
            "cost": lambda: part_cost(args, result),
        }[part]()
        write_json(args.json, result)


if __name__ == "__main__":
    main()
