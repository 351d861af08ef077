"""Every post-hoc refiner of a GAN on one protocol: the generator, DRS, MH-GAN, DOT, DGflow, DDLS,
a latent EBM prior and the Hat EBM, on the embedded GAN (or ``--generator builtin:twemoji``).

Each method draws ``--n`` samples at each value of its compute knob (K Langevin, SGD or flow
steps; MH-GAN's proposals per chain; DRS's gamma percentile, which sets how many proposals
an accepted sample costs), from the same seed, and is scored against the same reference (the
data's training split): the quick classifier's Frechet distance with precision, recall, density
and coverage in its features at every knob value, and Inception FID with the same four at each
method's default knob (``--inception-at default``; ``all`` for every point, ``none`` to skip),
each point scored as soon as it is drawn. ``--knobs default`` draws only the default points, and
``--at METHOD=VALUE`` moves a method's default (for a budget: say so where the numbers are reported).
Sampling seconds are wall seconds per ``--n`` images on this machine. DRS, MH-GAN and DDLS's
calibrated row use the logistic head fitted on ``--calibrate-n`` real training images (the
authors' DOT and DGflow use the raw logit). The Hat EBM and the latent prior are fitted runs
(``--hat-run``, ``--prior-run``), sampled at their calibrated or saved settings and at other K.

    python benchmarks/refiners_mnist.py --hat-run runs/mnist-joint --prior-run runs/mnist-prior \\
        --json benchmarks/results/refiners_mnist.json --figure benchmarks/results/refiners_mnist.png
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import header, inception_fids, write_json  # noqa: E402

from hatrefine.data import load_images  # noqa: E402
from hatrefine.distributed import resolve_device  # noqa: E402
from hatrefine.evaluation.metrics import feature_scores, features, load_classifier, quick_net  # noqa: E402
from hatrefine.models.runs import load_run  # noqa: E402
from hatrefine.networks.registry import load_discriminator, load_generator  # noqa: E402
from hatrefine.sampling.density_ratio import calibrate  # noqa: E402
from hatrefine.sampling.ratio_refiners import baseline  # noqa: E402

KNOBS = {  # method -> (knob name, values, default value, options for a value)
    "ddls": ("K", [5, 10, 20, 40], 20, lambda v: {"n_steps": v, "eps": 0.1}),
    "ddls_calibrated": ("K", [5, 10, 20, 40], 20, lambda v: {"n_steps": v, "eps": 0.1}),
    "drs": ("gamma percentile", [50, 80, 95, 99], 95, lambda v: {"gamma_percentile": v}),
    "mh": ("proposals", [10, 40, 160, 640], 640, lambda v: {"n_proposals": v}),
    "dot": ("SGD steps", [5, 10, 20, 40], 10, lambda v: {"n_steps": v, "lr": 0.01}),
    "dgflow": ("flow steps", [5, 10, 25, 50], 25, lambda v: {"n_steps": v, "eta": 0.1, "gamma": 0.01}),
}


def discriminator_refiner(method: str, value, G, D, calibration, real: torch.Tensor):
    """The ``KNOBS`` method at knob ``value``: DDLS, DRS, MH-GAN (chains started at ``real``), DOT or
    DGflow, with the logistic ``calibration`` where its authors use one."""
    kind = "ddls" if method.startswith("ddls") else method
    cal = calibration if method in ("ddls_calibrated", "drs", "mh") else None
    return baseline(kind, G, D, cal, real=real if method == "mh" else None, **KNOBS[method][3](value))


def chains(sampler, z0: torch.Tensor, seed: int, batch_size: int) -> torch.Tensor:
    """A fitted run's chains from the latents ``z0``, in batches, each batch seeded by its offset."""
    parts = [sampler.sample(z0[s : s + batch_size], generator=torch.Generator(z0.device).manual_seed(seed + s)).x for s in range(0, len(z0), batch_size)]
    return torch.cat(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="builtin:mnist", help="an embedded GAN: builtin:mnist or builtin:twemoji (its data is the reference)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hat-run", default=None, help="a fitted Hat EBM run on this generator (its calibrated T and K; then K x 0.5, 2)")
    p.add_argument("--prior-run", default=None, help="a fitted latent-prior run on this generator (its prior steps; then x 0.5, 2)")
    p.add_argument("--methods", default="generator,drs,mh,dot,dgflow,ddls,ddls_calibrated,prior,hat", help="comma-separated subset, run in this order")
    p.add_argument("--calibrate-n", type=int, default=1000)
    p.add_argument("--inception-at", choices=("default", "all", "none"), default="default")
    p.add_argument("--knobs", choices=("all", "default"), default="all", help="every knob value, or only each method's default")
    p.add_argument("--at", action="append", default=[], metavar="METHOD=VALUE", help="another default knob value for a method (repeatable)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None)
    p.add_argument("--figure", default=None)
    args = p.parse_args()
    defaults = {m: d for m, (_, _, d, _) in KNOBS.items()}
    for a in args.at:
        method, _, value = a.partition("=")
        if method not in KNOBS or not value.isdigit():
            p.error(f"--at {a}: expected METHOD=VALUE with METHOD one of {', '.join(KNOBS)} and an integer VALUE, e.g. --at mh=160")
        defaults[method] = int(value)
    device = resolve_device(args.device)
    result = header(args, device) | {"generator": args.generator, "points": []}
    G, D = load_generator(args.generator).to(device), load_discriminator(args.generator).to(device)
    reference = load_images(args.generator, G.image_shape, split="train")
    calibration = calibrate(G, D, reference[: args.calibrate_n], seed=args.seed)
    result["calibration"] = {"scale": calibration.scale, "bias": calibration.bias, "n_real": args.calibrate_n}
    net, spec = load_classifier(G.image_shape).to(device), quick_net(G.image_shape)
    real = features(net, reference)
    z0 = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed))
    methods = args.methods.split(",")

    def timed(draw) -> tuple[torch.Tensor, float, dict]:
        t0 = time.perf_counter()
        x, stats = draw()
        return x.cpu(), round(time.perf_counter() - t0, 1), stats

    runs = []  # (method, knob name, value, is default, draw)
    if "generator" in methods:
        runs.append(("generator", "-", 0, True, lambda: (torch.cat([G(z).detach() for z in z0.split(args.batch_size)]), {})))
    for method, (knob, values, _, _) in KNOBS.items():
        if method not in methods:
            continue
        default = defaults[method]
        for v in sorted({*values, default}) if args.knobs == "all" else [default]:

            def draw(method=method, v=v):
                refiner = discriminator_refiner(method, v, G, D, calibration, reference[: args.calibrate_n])
                res = refiner.sample(args.n, seed=args.seed, batch_size=args.batch_size)
                return res.x, getattr(res, "stats", {})

            runs.append((method, knob, v, v == default, draw))
    for name, path in (("hat", args.hat_run), ("prior", args.prior_run)):
        if name in methods and path:
            model = load_run(path, device=str(device))
            k = model.sampling.langevin_steps
            for v in sorted({max(1, k // 2), k, 2 * k}) if args.knobs == "all" else [k]:
                runs.append((name, "K", v, v == k, lambda model=model, v=v: (chains(model.sampler(n_steps=v), z0, args.seed, args.batch_size), {})))

    runs.sort(key=lambda run: methods.index(run[0]))  # in --methods order (a killed run keeps the first ones)
    for method, knob, value, is_default, draw in runs:
        x, seconds, stats = timed(draw)
        point = {"method": method, "knob": knob, "value": value, "default": is_default, "sample_seconds": seconds, **stats}
        point |= {f"{spec.name}_{k}": v for k, v in feature_scores(net, real, x).items()}
        if args.inception_at == "all" or (args.inception_at == "default" and is_default):
            scores, info = inception_fids({f"{method}@{value}": x}, args.generator, "auto", device)
            result |= info
            point |= scores[f"{method}@{value}"]
        result["points"].append(point)
        print({k: point[k] for k in ("method", "value", "sample_seconds", f"{spec.name}_fd", f"{spec.name}_recall")}, flush=True)
        write_json(args.json, result)  # after every point: a killed run keeps what it measured
    if args.figure:
        figure(result, spec, args.figure)


def figure(result: dict, spec, path: str) -> None:
    """Quality against sampling seconds: the quick distance and recall along each method's knob, and
    Inception FID where it was measured."""
    panels = [(f"{spec.name}_fd", f"{spec.label} Frechet distance (lower is better)"), (f"{spec.name}_recall", f"recall in {spec.label} features")]
    if any("fid" in p for p in result["points"]):
        panels.append(("fid", "Inception FID (lower is better)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
    for method in dict.fromkeys(p["method"] for p in result["points"]):
        for ax, (key, _) in zip(axes, panels):
            pts = sorted((p for p in result["points"] if p["method"] == method and key in p), key=lambda p: p["sample_seconds"])
            if pts:
                ax.plot([max(p["sample_seconds"], 0.1) for p in pts], [p[key] for p in pts], "o-" if len(pts) > 1 else "s", label=method)
    for ax, (_, label) in zip(axes, panels):
        ax.set_xscale("log")
        ax.set_xlabel(f"sampling seconds per {result['n_samples']} images")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
