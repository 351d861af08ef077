"""A long fit on the embedded default: does it stay stable and keep improving? (issue 26, section 2)

One fit of ``--steps`` updates (default 10,000) with ``FitConfig``'s defaults plus ``--fit``
overrides, in segments of 500 updates. After each segment the run's sampler (EMA weights,
the step sizes training has reached, the training T and K: no calibration inside the curve)
draws from fixed latents, not those of the fit or of any calibration:

- the quick metric every 500 updates: the LeNet Frechet distance, recall and coverage of
  1,000 samples against the 4,500 embedded training digits (as the end-of-fit line);
- Inception FID of 2,000 samples against the same digits at 900, 3,000 and the last update
  (``--fid-at``).

    nohup python benchmarks/long_fit_mnist.py --json benchmarks/results/long_fit_mnist.json > long_fit.log 2>&1 &

Resumable: run the same command again; the fit continues from its last checkpoint in
``--run-dir`` and the points measured so far are read back from the run's ``long_fit.json``.
The JSON (and a PNG of both curves next to it) is rewritten after every point, with
``complete`` false until the last update is measured. Keys: ``rollbacks`` (int),
``growth_guard_events`` (int), ``fid`` and ``quick`` (update count -> value), ``points``
(per point: the metrics, the health signals of the last logged update, fit and wall seconds).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
from common import header, inception_fids, write_json

from hatrefine.data import load_images
from hatrefine.distributed import resolve_device
from hatrefine.evaluation.metrics import feature_scores, features, load_lenet
from hatrefine.files.checkpoint import has_checkpoint
from hatrefine.files.jsonfiles import read_json, save_json
from hatrefine.settings.config import FitConfig
from hatrefine.training.resolve import resolve_config
from hatrefine.training.trainer import Trainer

DATA = "builtin:mnist"
SEGMENT = 500
HEALTH = ("loss", "grad_data", "drift_z", "drift_y", "residual_norm", "weight_norm", "eps_y", "eps_z", "lr")


def last_log_row(run: Path) -> dict:
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    return {k: float(rows[-1][k]) for k in HEALTH} | {"fit_seconds": round(sum(float(r["seconds_per_step"]) for r in rows), 1)}


def lenet_scores(net, real: torch.Tensor, images: torch.Tensor) -> dict:
    s = feature_scores(net, real, images)
    return {"lenet_fd": round(s["fd"], 3), "recall": s["recall"], "coverage": s["coverage"]}


def draw(sampler, z: torch.Tensor, seed: int, batch_size: int = 250) -> torch.Tensor:
    return torch.cat(
        [sampler.sample(z[s : s + batch_size], generator=torch.Generator(z.device).manual_seed(seed + s)).x for s in range(0, len(z), batch_size)]
    ).cpu()


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    steps = [p["step"] for p in result["points"]]
    a.plot(steps, [p["lenet_fd"] for p in result["points"]], "o-", label="Hat EBM")
    a.axhline(result["generator"]["lenet_fd"], color="gray", ls="--", label="generator")
    a.set(xlabel="updates of H", ylabel="LeNet Frechet distance (1,000 samples)", title="quick metric")
    fid = {int(k): v for k, v in result["fid"].items()}
    b.plot(list(fid), list(fid.values()), "o-", label="Hat EBM")
    if "fid" in result["generator"]:
        b.axhline(result["generator"]["fid"], color="gray", ls="--", label="generator")
    b.set(xlabel="updates of H", ylabel="FID (2,000 samples)", title="Inception FID")
    for ax in (a, b):
        for r in result["rollback_events"]:
            ax.axvline(r["step"], color="red", alpha=0.4)
        ax.legend()
    fig.suptitle(f"long fit on the embedded default; rollbacks: {result['rollbacks']}")
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--fit", default="{}", help="FitConfig overrides as JSON")
    p.add_argument("--run-dir", default="runs/long-fit-mnist")
    p.add_argument("--n", type=int, default=2000, help="samples for FID (the quick metric takes the first 1,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid-at", default="900,3000,last", help="updates at which to measure FID (comma-separated; 'last' = --steps; '' = none)")
    p.add_argument("--inception", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device, run = resolve_device(args.device), Path(args.run_dir)
    state_file = run / "long_fit.json"
    fid_at = sorted({args.steps if s == "last" else int(s) for s in args.fid_at.split(",") if s} & set(range(1, args.steps + 1)))
    points = sorted(set(range(SEGMENT, args.steps + 1, SEGMENT)) | set(fid_at) | {args.steps})

    overrides = json.loads(args.fit)
    if "steps" in overrides or overrides.get("lr_schedule", "constant") != "constant":
        raise SystemExit("set the length with --steps, not in --fit; the fit runs in segments, so only a constant learning rate means the same fit")
    settings = FitConfig(**{"seed": args.seed, "device": args.device, "eval_samples": 0, "calibrate": False, **overrides, "steps": points[0]})
    settings = resolve_config(settings).config  # as the trainer records it
    if has_checkpoint(run) and state_file.is_file():
        result = read_json(state_file)
        if {k: v for k, v in result["fit_settings"].items() if k != "steps"} != {k: v for k, v in settings.to_dict().items() if k != "steps"}:
            raise SystemExit(f"{run} holds a fit with other settings; use the same --fit and --seed, or another --run-dir")
        print(f"resuming: {len(result['points'])} points measured, fit at step {result['points'][-1]['step'] if result['points'] else 0}")
    else:
        config = settings
        trainer = Trainer(config, run, overwrite=True)
        result = header(args, device) | {"fit_settings": config.to_dict(), "points": [], "fid": {}, "quick": {}, "complete": False}
    z = None
    reference = load_images(DATA, (1, 32, 32), split="train")
    lenet = load_lenet().to(device)
    real = features(lenet, reference)

    for target in points:
        if any(q["step"] == target for q in result["points"]):
            continue
        trainer = Trainer(None, run, resume=True, steps=target) if has_checkpoint(run) else trainer
        t0 = time.perf_counter()
        trainer.run(progress=False)
        if trainer.step != target:
            raise SystemExit(f"the fit is at update {trainer.step}, past the point {target}; measure in a new --run-dir")
        refiner = trainer.refiner()
        G = refiner.generator
        z = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed + 7919))
        if "generator" not in result:  # the baseline, once, on the same latents
            with torch.no_grad():
                before = torch.cat([G(z[s : s + 250]) for s in range(0, args.n, 250)]).cpu()
            result["generator"] = lenet_scores(lenet, real, before[:1000])
            if fid_at:
                scores, ref_info = inception_fids({"generator": before}, DATA, args.inception, device)
                result["generator"]["fid"], result["generator"]["inception_prdc"] = scores["generator"]["fid"], scores["generator"]
                result |= ref_info
        images = draw(refiner.sampler(), z if target in fid_at else z[:1000], args.seed)
        point = {"step": target, **lenet_scores(lenet, real, images[:1000])}
        if target in fid_at:
            scores, _ = inception_fids({f"hat_{target}": images}, DATA, args.inception, device)
            point["fid"] = result["fid"][str(target)] = scores[f"hat_{target}"]["fid"]
            point["inception_prdc"] = scores[f"hat_{target}"]
        point |= last_log_row(run) | {"wall_seconds_segment": round(time.perf_counter() - t0, 1)}
        result["quick"][str(target)] = point["lenet_fd"]
        result["points"].append(point)
        result["rollback_events"] = trainer.rollbacks
        result["rollbacks"] = len(trainer.rollbacks)
        result["growth_guard_events"] = sum("energy gap" in r["reason"] for r in trainer.rollbacks)
        result["sampling"] = refiner.sampling.to_dict()
        result["complete"] = target == points[-1]
        print(json.dumps(point), flush=True)
        save_json(state_file, result)
        write_json(args.json, result)
        if args.json:
            plot(result, Path(args.json).with_suffix(".png"))


if __name__ == "__main__":
    main()
