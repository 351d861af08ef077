"""Tandem synthesis on the embedded digits: generator and hat network learned together from scratch.

One process: ``SynthesisTrainer`` with the ``synthesize`` defaults (or ``--fit`` overrides).
Every ``--eval-every`` updates, the Frechet distance in LeNet features (cheap; 500 samples vs
the 4,500 embedded training digits) of the generator alone, G(Z), and of the Hat EBM,
G(Z) + Y after K Langevin steps on Y, from the same Z. At the end, FID (Inception) of both on
N samples. Writes the curve figure, JSON and a markdown table.

    python benchmarks/synthesis_mnist.py --json benchmarks/results/synthesis_mnist.json \
        --figure benchmarks/results/synthesis_mnist_curve.png

``--data builtin:twemoji`` runs it on the colour emoji (synthesize's ``twemoji`` recipe: a dcgan
generator and the small hat on 3x32x32), its curve in the emoji classifier's features;
``--no-inception`` leaves out the final FID (the quick classifier's distance on N samples instead);
``--samples-figure`` writes G(Z) beside G(Z) + Y.
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

from hatrefine.data import load_images  # noqa: E402
from hatrefine.distributed import resolve_device  # noqa: E402
from hatrefine.evaluation.metrics import classifier_fd, load_classifier, quick_net  # noqa: E402
from hatrefine.evaluation.report import save_grid, save_pair_figure  # noqa: E402
from hatrefine.settings.config import SynthesisConfig, field_defaults  # noqa: E402
from hatrefine.settings.recipes import apply_recipe  # noqa: E402
from hatrefine.training.synthesis import SynthesisTrainer  # noqa: E402


def draw(trainer: SynthesisTrainer, z: torch.Tensor, seed: int, chunk: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """G(z) and the Hat EBM's G(z) + Y (EMA hat), chunk by chunk."""
    refiner = trainer.refiner()
    sampler = refiner.sampler()
    with torch.no_grad():
        g = torch.cat([refiner.generator(z[s : s + chunk]) for s in range(0, len(z), chunk)])
    x = torch.cat([sampler.sample(z[s : s + chunk], generator=torch.Generator(z.device).manual_seed(seed + s)).x for s in range(0, len(z), chunk)])
    return g.cpu(), x.cpu()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="samples per set for the final FID")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="builtin:mnist", help="builtin:mnist or builtin:twemoji")
    p.add_argument("--no-inception", action="store_true", help="the quick classifier's distance on N samples instead of FID")
    p.add_argument("--samples-figure", default=None, help="write G(Z) beside G(Z) + Y here")
    p.add_argument("--run-dir", default="runs/benchmark-synthesis", help="where to train (replaced)")
    p.add_argument("--fit", default="{}", help="SynthesisConfig overrides as JSON")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-n", type=int, default=500, help="samples per set for the LeNet curve")
    p.add_argument("--inception", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--figure", default=None, help="write the curve figure here")
    args = p.parse_args()
    device = resolve_device(args.device)
    result = header(args, device)

    settings = {"seed": args.seed, "device": args.device, "eval_samples": 0, "calibrate": False, **json.loads(args.fit)}
    if args.data == "builtin:twemoji":
        given = set(settings)
        settings, _ = apply_recipe("synthesize", field_defaults(SynthesisConfig) | settings | {"recipe": "twemoji"}, given)
    elif args.data != "builtin:mnist":
        settings["data"] = args.data
    config = SynthesisConfig(**settings)  # sampled at the config's K and T
    trainer = SynthesisTrainer(config, args.run_dir, overwrite=True)
    result |= {"settings": config.to_dict(), "langevin_steps": config.test_steps}
    shape = trainer.generator.image_shape
    reference, net = load_images(args.data, shape, split="train").to(device), load_classifier(shape).to(device)
    quick = quick_net(shape)
    z_eval = trainer.generator.sample_latent(args.eval_n, generator=torch.Generator(device).manual_seed(args.seed + 1))

    # train, with the cheap curve along the way (its time is not training time)
    curve, train_seconds, fit = [], 0.0, {}
    with measured(fit):
        while trainer.step < config.steps:
            t0 = time.perf_counter()
            trainer.log.append([trainer.train_step()])
            train_seconds += time.perf_counter() - t0
            if trainer.step % args.eval_every == 0 or trainer.step == config.steps:
                g, x = draw(trainer, z_eval, args.seed)
                curve.append(
                    {
                        "step": trainer.step,
                        "train_seconds": round(train_seconds, 1),
                        "fd_generator": round(classifier_fd(g, reference, net), 3),
                        "fd_hat": round(classifier_fd(x, reference, net), 3),
                    }
                )
                print(json.dumps(curve[-1]), flush=True)
        trainer.save_checkpoint()
    result |= {"fit_seconds": round(train_seconds, 1), "fit": fit, "curve": curve}

    # final FID of G alone and G + Y, same Z
    z = trainer.generator.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed))
    record: dict = {}
    with measured(record):
        g, x = draw(trainer, z, args.seed)
    result["sample_seconds"] = record["seconds"]
    save_grid(g, Path(args.run_dir) / "generator_samples.png")
    save_grid(x, Path(args.run_dir) / "hat_samples.png")
    if args.samples_figure:
        save_pair_figure(g, x, ("generator G(Z), learned in tandem", f"Hat EBM G(Z) + Y, K {config.test_steps}"), args.samples_figure)
    if args.no_inception:
        scores, key = classifier_scores({"generator": g, "hat": x}, args.data), f"{quick.name}_fd"
        reference_info = {"reference": f"{args.data} train split", "n_reference": len(reference), "metric": key}
    else:
        (scores, reference_info), key = inception_fids({"generator": g, "hat": x}, args.data, args.inception, device), "fid"
    fids = {name: s[key] for name, s in scores.items()}
    result |= reference_info | {
        f"{key}_generator": fids["generator"],
        f"{key}_hat": fids["hat"],
        "prdc_generator": scores["generator"],
        "prdc_hat": scores["hat"],
    }

    def along(key: str) -> str:
        return ", ".join(f"{c['step']}: {c[key]:.1f}" for c in curve)

    lines = [
        f"| samples | {reference_info.get('metric', 'FID')} ({args.n} vs {reference_info['n_reference']} {quick.items}) | {quick.label} FD along training (step: value) |",
        "|---|---|---|",
        f"| generator G(Z), learned in tandem | {fids['generator']:.2f} | {along('fd_generator')} |",
        f"| Hat EBM G(Z) + Y, K {config.test_steps} | {fids['hat']:.2f} | {along('fd_hat')} |",
    ]
    result["table"] = "\n".join(lines)
    print(result["table"])
    print(f"training {train_seconds:.0f} s for {config.steps} updates")

    if args.figure:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        minutes = [c["train_seconds"] / 60 for c in curve]
        ax.plot(minutes, [c["fd_generator"] for c in curve], "o-", label="generator G(Z)")
        ax.plot(minutes, [c["fd_hat"] for c in curve], "o-", label=f"Hat EBM G(Z) + Y (K {config.test_steps})")
        ax.set_xlabel("training time (minutes, 2 CPU cores)" if device.type == "cpu" else "training time (minutes)")
        ax.set_ylabel(f"Frechet distance, {quick.label} ({args.eval_n} samples)")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title(f"Tandem synthesis on {args.data}")
        fig.tight_layout()
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=110)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
