"""Quality per compute: FID against sampling steps K, the Hat EBM next to DDLS (issue 26, section 5).

For K in {5, 10, 20, 50, 100} on the embedded default: the Hat EBM of a fitted run (``--run``),
DDLS with the discriminator's raw logit, and DDLS calibrated (the logistic head DDLS
recommends). Each method gets its own temperature at each K, chosen on other latents than
the measured ones: 500 chains per temperature (the Hat EBM: the run's training T x 1, 1/1.5,
1/2, 1/3; DDLS: T 1, 1/2, 1/4) scored on the held-out digits by the product's calibration
criterion (``hatrefine.evaluation.calibration.choose``: the lowest LeNet distance among the temperatures
that keep recall and coverage). Then 2,000 chains from the measured latents run at the
chosen temperatures and are scored by Inception FID, precision, recall, density and
coverage against the 4,500 training digits. Chains of one temperature are continued from
one K to the next (constant step schedules), and each point's ``sample_seconds`` are the
wall seconds of K-step chains for all 2,000 latents.

Resumable: each chosen temperature and each measured point is written to the JSON as soon as
it exists (``complete`` false until the last); the same command continues where it stopped.

    python benchmarks/refine_curves_mnist.py --run RUN --json benchmarks/results/refine_curves_mnist.json

The JSON holds ``fid_generator``, ``hat``, ``ddls_raw``, ``ddls_calibrated`` and ``ddls_best``
(K -> FID; ``ddls_best`` the better DDLS at each K), ``points`` (every measured row) and
``selection`` (the temperature grids and scores); a PNG of the curves is written next to it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import header, inception_fids, write_json

from hatrefine import HatRefiner
from hatrefine.data import load_images
from hatrefine.distributed import resolve_device
from hatrefine.evaluation.calibration import chain_ends, choose
from hatrefine.evaluation.metrics import feature_scores, features, load_lenet
from hatrefine.networks.registry import load_discriminator
from hatrefine.sampling.ddls import DDLS
from hatrefine.sampling.density_ratio import calibrate

DATA = "builtin:mnist"
STEPS = (5, 10, 20, 50, 100)
DDLS_TEMPERATURES = (1.0, 0.5, 0.25)
HAT_FACTORS = (1.0, 1 / 1.5, 1 / 2, 1 / 3)
ORDER = ("ddls_calibrated", "hat", "ddls_raw")  # the order points are scored in


def select(make_sampler, temperatures, z, steps, lenet, real, generator_scores, seed, batch_size) -> tuple[dict[int, float], list[dict]]:
    """The chosen temperature at each K (criterion of hatrefine.evaluation.calibration) and every scored row."""
    rows = []
    for t in temperatures:
        images, _ = chain_ends(make_sampler(t), z, list(steps), seed, batch_size)
        rows += [{"temperature": t, "langevin_steps": K, **feature_scores(lenet, real, images[K])} for K in steps]
    chosen = {K: choose([r for r in rows if r["langevin_steps"] == K], generator_scores)[0]["temperature"] for K in steps}
    return chosen, rows


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for name, label in (("hat", "Hat EBM"), ("ddls_raw", "DDLS (raw logit)"), ("ddls_calibrated", "DDLS (calibrated)")):
        curve = {int(k): v for k, v in result[name].items()}
        ax.plot(list(curve), list(curve.values()), "o-", label=label)
    ax.axhline(result["fid_generator"], color="gray", ls="--", label="generator")
    ax.set(xscale="log", xlabel="Langevin steps K", ylabel=f"FID ({result['n_samples']} samples)", title="quality per sampling step, each at its chosen T")
    ax.set_xticks(STEPS, [str(k) for k in STEPS])
    ax.legend()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a fitted run on builtin:mnist (its EMA hat and step sizes)")
    p.add_argument("--n", type=int, default=2000, help="measured chains per point")
    p.add_argument("--n-select", type=int, default=500, help="chains per temperature for the selection (other latents)")
    p.add_argument("--steps", default=",".join(map(str, STEPS)), help="the K values, comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ddls-eps", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--inception", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    device, steps = resolve_device(args.device), sorted(int(k) for k in args.steps.split(","))
    refiner = HatRefiner.from_pretrained(args.run, device=args.device)
    G, D = refiner.generator, load_discriminator(refiner.config.generator).to(device)
    ddls_calibration = calibrate(G, D, load_images(DATA, G.image_shape, split="train", limit=1000), seed=args.seed)
    makers = {
        "hat": lambda t: refiner.sampler(temperature=t),
        "ddls_raw": lambda t: DDLS(G, D, eps=args.ddls_eps, temperature=t).sampler,
        "ddls_calibrated": lambda t: DDLS(G, D, eps=args.ddls_eps, temperature=t, calibration=ddls_calibration).sampler,
    }
    temperatures = {"hat": [refiner.config.temperature * f for f in HAT_FACTORS], "ddls_raw": DDLS_TEMPERATURES, "ddls_calibrated": DDLS_TEMPERATURES}
    settings = {
        "run": args.run,
        "hat_sampling": refiner.sampling.to_dict(),
        "steps": steps,
        "n_select": args.n_select,
        "ddls_eps": args.ddls_eps,
        "ddls_logit_scale": round(ddls_calibration.scale, 4),
    }
    result = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    if not result.get("complete", True) and all(result.get(k) == v for k, v in settings.items()) and result.get("n_samples") == args.n:
        print(f"resuming {args.json}: {len(result['points'])} points measured", flush=True)
    else:
        result = header(args, device) | settings | {"complete": False, "selection": {}, "chosen_temperature": {}, "points": []}

    # 1. temperatures, chosen on other latents against the held-out digits
    lenet = load_lenet().to(device)
    real = features(lenet, load_images(DATA, G.image_shape, split="test"))
    z_select = G.sample_latent(args.n_select, generator=torch.Generator(device).manual_seed(args.seed + 101))
    with torch.no_grad():
        generator_scores = feature_scores(lenet, real, torch.cat([G(z_select[s : s + args.batch_size]) for s in range(0, args.n_select, args.batch_size)]))
    result["selection"]["generator"] = generator_scores
    for name, make in makers.items():
        if name not in result["chosen_temperature"]:
            chosen, result["selection"][name] = select(
                make, temperatures[name], z_select, steps, lenet, real, generator_scores, args.seed + 101, args.batch_size
            )
            result["chosen_temperature"][name] = {str(K): t for K, t in chosen.items()}
            write_json(args.json, result)
        print(f"{name}: chosen T by K {result['chosen_temperature'][name]}", flush=True)
    chosen = {name: {int(K): t for K, t in by_k.items()} for name, by_k in result["chosen_temperature"].items()}

    # 2. the measured chains, from other latents: all sampled first (their wall seconds recorded
    # then, with nothing else of this script running), then scored by FID point by point
    z = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed))
    with torch.no_grad():
        images = {("generator", 0): torch.cat([G(z[s : s + args.batch_size]) for s in range(0, args.n, args.batch_size)]).cpu()}
    seconds = result.setdefault("sample_seconds", {})
    measured = {(p["method"], p["langevin_steps"]) for p in result["points"]}
    for name, make in makers.items():
        for t in sorted(set(chosen[name].values())):
            ks = sorted(K for K, tk in chosen[name].items() if tk == t)
            if all((name, K) in measured for K in ks):
                continue
            x, s = chain_ends(make(t), z, ks, args.seed, args.batch_size)
            images |= {(name, K): x[K].cpu() for K in ks}
            for K in ks:  # (a resumed run keeps the seconds of its first sampling)
                seconds.setdefault(name, {}).setdefault(str(K), round(s[K], 1))
        write_json(args.json, result)
    if "generator" not in result:
        fids, reference = inception_fids({"generator": images["generator", 0]}, DATA, args.inception, device)
        result |= reference | {"fid_generator": fids["generator"]["fid"], "generator": fids["generator"]}
        write_json(args.json, result)
    for name, K in sorted(set(images) - measured - {("generator", 0)}, key=lambda key: (ORDER.index(key[0]), key[1])):
        fids, _ = inception_fids({f"{name}_K{K}": images[name, K]}, DATA, args.inception, device)
        result["points"].append(
            {"method": name, "langevin_steps": K, "temperature": chosen[name][K], "sample_seconds": seconds[name][str(K)], **fids[f"{name}_K{K}"]}
        )
        write_json(args.json, result)

    point = {(p["method"], p["langevin_steps"]): p for p in result["points"]}
    for name in makers:
        result[name] = {str(K): point[name, K]["fid"] for K in steps}
    result["ddls_best"] = {str(K): min(result["ddls_raw"][str(K)], result["ddls_calibrated"][str(K)]) for K in steps}
    lines = [
        "| K | Hat EBM FID (T) | DDLS raw FID (T) | DDLS calibrated FID (T) | Hat EBM s | DDLS raw s | DDLS calibrated s |",
        "|---|---|---|---|---|---|---|",
    ]
    for K in steps:
        cell = lambda m: f"{point[m, K]['fid']:.2f} ({point[m, K]['temperature']:.3g})"
        lines.append(
            f"| {K} | {cell('hat')} | {cell('ddls_raw')} | {cell('ddls_calibrated')} | " + " | ".join(str(point[m, K]["sample_seconds"]) for m in makers) + " |"
        )
    result["table"] = "\n".join(lines) + f"\n\ngenerator FID {result['fid_generator']:.2f}"
    result["complete"] = True
    print(result["table"])
    write_json(args.json, result)
    if args.json:
        plot(result, Path(args.json).with_suffix(".png"))


if __name__ == "__main__":
    main()
