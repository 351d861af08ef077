"""Refinement at the generator's speed: a fitted run distilled into G(T(z)), measured beside the
generator, the run's own chains and DDLS on the same latents (``--generator builtin:twemoji`` for colour).

Rows, each from ``--n`` latents of ``--seed``: the generator; the run's chains at their calibrated
T and K; one distilled generator per ``--methods`` entry (``hatrefine distill``'s ``regression`` and
``mmd``); DDLS (calibrated, at the run's K). Scores: FID, precision, recall, density and coverage
(Inception, against the training split), the quick classifier's Frechet distance, and the sampling
seconds per ``--n`` images. ``--rounds N`` then refines in rounds with the first method: fit a new
Hat EBM on the distilled generator (``fit --generator dir:DIR``, the run's fit settings), distil it,
and repeat, reporting FID, recall and the cumulative fit and distillation seconds after each round.
``--base JSON`` takes the rows from an earlier run of this script on the same ``--run``, ``--n`` and
``--seed`` instead of measuring them again. Round 1 is the first method's row (the same images).

    python benchmarks/distill_mnist.py --run runs/mnist-joint --rounds 3 \\
        --json benchmarks/results/distill_mnist.json --figure benchmarks/results/distill_mnist_rounds.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import classifier_scores, header, inception_fids, measured, write_json  # noqa: E402

from hatrefine import HatRefiner  # noqa: E402
from hatrefine.data import load_images  # noqa: E402
from hatrefine.distributed import resolve_device  # noqa: E402
from hatrefine.files.jsonfiles import read_json  # noqa: E402
from hatrefine.networks.registry import load_discriminator, load_generator  # noqa: E402
from hatrefine.sampling.ddls import DDLS  # noqa: E402
from hatrefine.sampling.density_ratio import calibrate  # noqa: E402
from hatrefine.settings.config import FitConfig  # noqa: E402
from hatrefine.settings.distill import DistillConfig  # noqa: E402
from hatrefine.training.distill import DistillTrainer  # noqa: E402
from hatrefine.training.trainer import Trainer  # noqa: E402


def timed(draw) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    x = draw()
    return x.cpu(), round(time.perf_counter() - t0, 1)


def distilled(run: Path, out: Path, method: str, steps: int, seed: int) -> tuple[object, float]:
    """A distilled generator of ``run`` in ``out`` (made now, or reused) and its seconds."""
    if not (out / "model.safetensors").is_file() or not (out / "benchmark_seconds.json").is_file():
        record: dict = {}
        with measured(record):
            DistillTrainer(DistillConfig(run=str(run), method=method, steps=steps, seed=seed, eval_samples=0), out, overwrite=True).run(progress=False)
        (out / "benchmark_seconds.json").write_text(json.dumps(record))
    return load_generator(f"dir:{out}"), read_json(out / "benchmark_seconds.json")["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a fitted and calibrated run (the main job's)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="regression,mmd")
    p.add_argument("--distill-steps", type=int, default=500)
    p.add_argument("--rounds", type=int, default=0, help="refinement rounds after the first distillation (0: none)")
    p.add_argument("--round-fit", default="{}", help="FitConfig overrides for the rounds' fits as JSON (default: the run's settings)")
    p.add_argument("--work", default="runs/benchmark-distill", help="where distilled generators and round fits go (reused)")
    p.add_argument("--no-inception", action="store_true", help="only the quick classifier's columns")
    p.add_argument("--base", default=None, help="rows from an earlier run of this script (same --run, --n, --seed), for --rounds")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    p.add_argument("--figure", default=None)
    args = p.parse_args()
    device = resolve_device(args.device)
    run, work = Path(args.run), Path(args.work)
    refiner = HatRefiner.from_pretrained(run, device=args.device)
    G, data = refiner.generator, refiner.config.data
    result = header(args, device) | {
        "run": str(run),
        "generator": refiner.config.generator,
        "sampling": {"temperature": refiner.sampling.temperature, "langevin_steps": refiner.sampling.langevin_steps},
    }
    z0 = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed))
    parts = lambda f: torch.cat([f(z0[s : s + args.batch_size], s) for s in range(0, args.n, args.batch_size)])  # noqa: E731
    if args.base:
        base = read_json(args.base)
        if (base["run"], base["n_samples"], base["seed"]) != (str(run), args.n, args.seed):
            raise SystemExit(f"{args.base} measured {base['run']} on {base['n_samples']} latents of seed {base['seed']}; pass the same --run, --n and --seed")
        result |= {k: v for k, v in base.items() if k not in result and k != "command"}
        result["rows"] = base["rows"]
    else:
        result["rows"] = base_rows(args, refiner, run, work, z0, parts, result, device)
    write_json(args.json, result)
    if args.rounds:
        result["rounds"] = rounds(args, refiner, result["rows"], data, device, parts)
        write_json(args.json, result)
        if args.figure:
            figure(result, args.figure)


def base_rows(args, refiner, run: Path, work: Path, z0, parts, result: dict, device) -> dict:
    """The generator, the chains, each distilled generator and DDLS, each scored."""
    G, spec, data = refiner.generator, refiner.config.generator, refiner.config.data
    images, rows = {}, {}
    with torch.no_grad():
        images["generator"], seconds = timed(lambda: parts(lambda z, s: G(z)))
    rows["generator"] = {"sample_seconds": seconds}
    sampler = refiner.sampler()
    images["chains"], seconds = timed(lambda: parts(lambda z, s: sampler.sample(z, generator=torch.Generator(device).manual_seed(args.seed + s)).x))
    rows["chains"] = {"sample_seconds": seconds}
    for method in args.methods.split(","):
        D, seconds = distilled(run, work / method, method, args.distill_steps, args.seed)
        with torch.no_grad():
            images[f"distilled_{method}"], sample_seconds = timed(lambda: parts(lambda z, s: D(z)))
        rows[f"distilled_{method}"] = {"sample_seconds": sample_seconds, "distill_seconds": seconds}
    disc = load_discriminator(spec).to(device)
    cal = calibrate(G, disc, load_images(data, G.image_shape, split="train", limit=1000), seed=args.seed)
    ddls = DDLS(G, disc, n_steps=refiner.sampling.langevin_steps, calibration=cal)
    images["ddls_calibrated"], seconds = timed(
        lambda: parts(lambda z, s: ddls.sampler.sample(z, generator=torch.Generator(device).manual_seed(args.seed + s)).x)
    )
    rows["ddls_calibrated"] = {"sample_seconds": seconds}
    for name, scores in classifier_scores(images, data).items():
        rows[name] |= scores
    if not args.no_inception:
        scores, reference = inception_fids(images, data, "auto", device)
        result |= reference
        for name in images:
            rows[name] |= scores[name]
    return rows


def rounds(args, refiner, rows: dict, data: str, device, parts) -> list[dict]:
    """Refinement in rounds with the first method: fit a Hat EBM on the last distilled generator (the
    run's settings, the original discriminator as the hat), distil it, score; cumulative seconds include the first fit."""
    method, work, spec = args.methods.split(",")[0], Path(args.work), refiner.config.generator
    first_fit = Path(args.run) / "benchmark_fit.json"
    cumulative = (read_json(first_fit)["seconds"] if first_fit.is_file() else 0.0) + rows[f"distilled_{method}"]["distill_seconds"]
    settings = {k: v for k, v in refiner.config.to_dict().items() if k in FitConfig.__dataclass_fields__ and k not in ("generator", "checkpoint", "recipe")}
    gen_dir, points = work / method, []
    for r in range(1, args.rounds + 1):
        if r > 1:
            record: dict = {}
            with measured(record):
                overrides = {"generator": f"dir:{gen_dir}", "hat": "discriminator", "discriminator": spec, "eval_samples": 0} | json.loads(args.round_fit)
                config = FitConfig(**settings | overrides)
                Trainer(config, work / f"round{r}" / "run", overwrite=True).run(progress=False)
            gen_dir = work / f"round{r}" / "distilled"
            _, seconds = distilled(work / f"round{r}" / "run", gen_dir, method, args.distill_steps, args.seed)
            cumulative += record["seconds"] + seconds
        point = {"round": r, "cumulative_seconds": round(cumulative, 1)}
        if r == 1:  # the first method's row: the same generator on the same latents, already scored
            point |= {k: v for k, v in rows[f"distilled_{method}"].items() if not k.endswith("_seconds")}
        else:
            Dr = load_generator(f"dir:{gen_dir}")
            with torch.no_grad():
                x = parts(lambda z, s: Dr(z)).cpu()
            point |= classifier_scores({"x": x}, data)["x"]
            if not args.no_inception:
                point |= inception_fids({f"round{r}": x}, data, "auto", device)[0][f"round{r}"]
        points.append(point)
        print(point, flush=True)
    return points


def figure(result: dict, path: str) -> None:
    """FID (or the quick distance) and recall after each round, the generator at round 0."""
    pts = result["rounds"]
    key = "fid" if "fid" in pts[0] else next(k for k in pts[0] if k.endswith("_fd"))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, k in zip(axes, (key, "recall")):
        if k in pts[0]:
            ax.plot([0] + [p["round"] for p in pts], [result["rows"]["generator"].get(k)] + [p[k] for p in pts], "o-", label="generator, then distilled")
            if k in result["rows"].get("chains", {}):
                ax.axhline(result["rows"]["chains"][k], ls="--", c="grey", label="the first run's chains")
            ax.set_xticks(range(len(pts) + 1))
            ax.set_xlabel("round")
            ax.set_ylabel(k)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
