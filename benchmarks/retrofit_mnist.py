"""Retrofit on the embedded digits: sample from a plain autoencoder's decoder with a Hat EBM.

One process: pretrain the autoencoder (``hatrefine pretrain-ae`` defaults: latent 1x16x16 on
the sphere of radius 16), fit a joint Hat EBM on its decoder (Gaussian prior on Y, sigma 0.1,
as the paper), then draw N images two ways from the same Z ~ N(0, I): decoder(Z) alone, and
the retrofit's Langevin samples. FID of each against the same reference (the 4,500 embedded
training digits), the Langevin path figure, wall seconds and peak memory; JSON + markdown.

    python benchmarks/retrofit_mnist.py --json benchmarks/results/retrofit_mnist.json \
        --figure benchmarks/results/retrofit_mnist_path.png

``--data builtin:twemoji`` runs it on the colour emoji (pretrain-ae's ``twemoji`` recipe: 3x32x32);
``--no-inception`` scores with the shipped quick classifier (LeNet or the emoji classifier) instead of FID;
``--samples-figure`` writes decoder(Z) over the retrofit's samples of the same Z.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from common import classifier_scores, header, inception_fids, measured, write_json

from hatrefine import load_generator
from hatrefine.data import load_images
from hatrefine.distributed import resolve_device
from hatrefine.evaluation.report import path_figure, save_grid, save_pair_figure
from hatrefine.settings.autoencoder import AEConfig
from hatrefine.settings.config import FitConfig, field_defaults
from hatrefine.settings.recipes import apply_recipe
from hatrefine.training.autoencoder import AutoencoderTrainer
from hatrefine.training.trainer import Trainer

FIT = '{"steps": 400, "langevin_steps": 30, "eps_y": 5e-4, "eps_z": 2e-2, "y_sigma": 0.1, "lr": 1e-4, "joint_update": "alternate", "grad_penalty": 0, "calibrate": false}'


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="builtin:mnist", help="builtin:mnist or builtin:twemoji")
    p.add_argument("--n", type=int, default=2000, help="samples per method")
    p.add_argument("--no-inception", action="store_true", help="score with the quick classifier instead of FID")
    p.add_argument("--samples-figure", default=None, help="write decoder(Z) beside the retrofit's samples here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ae-dir", default="runs/benchmark-ae", help="autoencoder directory (reused if it holds a finished one)")
    p.add_argument("--run-dir", default="runs/benchmark-retrofit", help="where to fit the Hat EBM (replaced)")
    p.add_argument("--ae", default="{}", help="AEConfig overrides as JSON")
    p.add_argument("--fit", default=FIT, help="FitConfig overrides as JSON")
    p.add_argument("--inception", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=250, help="chains per chunk when sampling")
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--figure", default=None, help="also copy the Langevin path figure here")
    args = p.parse_args()
    device = resolve_device(args.device)
    result = header(args, device)

    # 1. the autoencoder
    ae, ae_dir = {}, Path(args.ae_dir)
    with measured(ae):
        resume = (ae_dir / "config.json").is_file()
        ae_settings = {"seed": args.seed, "device": args.device, **json.loads(args.ae)}
        if args.data != "builtin:mnist":
            ae_settings = {"recipe": "twemoji", **ae_settings} if args.data == "builtin:twemoji" else {"data": args.data, **ae_settings}
        trainer = AutoencoderTrainer(None if resume else ae_config(ae_settings), ae_dir, resume=resume)
        trainer.run(progress=False)
    result["autoencoder"] = ae | {
        "settings": dataclasses.asdict(trainer.config),
        "final_mse": float(trainer.log.path.read_text().splitlines()[-1].split(",")[1]),
    }

    # 2. the retrofit
    fit: dict = {}
    config = FitConfig(
        **{"generator": f"ae:{ae_dir}", "data": args.data, "mode": "joint", "seed": args.seed, "device": args.device, "eval_samples": 0, **json.loads(args.fit)}
    )
    with measured(fit):
        hat_trainer = Trainer(config, args.run_dir, overwrite=True)
        hat_trainer.run(progress=False)
    refiner = hat_trainer.refiner()
    result |= {"fit_seconds": fit["seconds"], "fit": fit, "hat_settings": config.to_dict(), "langevin_steps": config.test_steps}

    # 3. decoder(Z) and retrofit samples from the same Z
    G = load_generator(f"ae:{ae_dir}").to(device)
    z0 = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed))
    chunks = range(0, args.n, args.batch_size)
    rows, images = {}, {}
    record: dict = {}
    with measured(record), torch.no_grad():
        images["decoder"] = torch.cat([G(z0[s : s + args.batch_size]) for s in chunks]).cpu()
    rows["decoder"] = {"sample_seconds": record["seconds"]}
    sampler, parts, record = refiner.sampler(), [], {}
    with measured(record):
        for s in chunks:
            res = sampler.sample(
                z0[s : s + args.batch_size], generator=torch.Generator(device).manual_seed(args.seed + s), path_frames=8 if s == 0 else 0, path_chains=4
            )
            if s == 0:
                K = config.test_steps
                path_figure(res.path, Path(args.run_dir) / "langevin_path.png", sorted({round(i * K / 7) for i in range(8)}))
            parts.append(res)
    images["retrofit"] = torch.cat([r.x for r in parts]).cpu()
    rows["retrofit"] = {
        "sample_seconds": record["seconds"],
        "mean_residual_norm": round(torch.cat([r.y for r in parts]).flatten(1).norm(dim=1).mean().item(), 3),
        "mean_latent_move": round((torch.cat([r.z for r in parts]) - z0).flatten(1).norm(dim=1).mean().item(), 3),
    }
    save_grid(images["decoder"], Path(args.run_dir) / "decoder_samples.png")
    save_grid(images["retrofit"], Path(args.run_dir) / "retrofit_samples.png")

    if args.samples_figure:
        save_pair_figure(images["decoder"][:64], images["retrofit"][:64], ("decoder(Z), Z ~ N(0, I)", "Hat EBM retrofit, same Z"), args.samples_figure)

    # 4. FID (or the quick classifier's distance) against the same reference
    if args.no_inception:
        scores = classifier_scores(images, args.data)
        key = next(k for k in scores["decoder"] if k.endswith("_fd"))
        reference = {
            "reference": f"{args.data} train split",
            "n_reference": len(load_images(args.data, G.image_shape, split="train")),
            "metric": key,
        }
    else:
        (scores, reference), key = inception_fids(images, args.data, args.inception, device), "fid"
    fids = {name: s[key] for name, s in scores.items()}
    result |= reference | {f"{key}_decoder": fids["decoder"], f"{key}_retrofit": fids["retrofit"], "improvement": round(fids["decoder"] / fids["retrofit"], 2)}
    for name in images:
        rows[name] |= scores[name]
    result["rows"] = rows
    lines = [
        f"| sampler | {'quick classifier distance' if args.no_inception else 'FID'} ({args.n} samples vs {reference['n_reference']} training images) | Langevin steps | sampling s | fit s |",
        "|---|---|---|---|---|",
        f"| decoder(Z), Z ~ N(0, I) | {fids['decoder']:.2f} | 0 | {rows['decoder']['sample_seconds']} | {ae['seconds']} (autoencoder) |",
        f"| Hat EBM retrofit, joint | {fids['retrofit']:.2f} ({result['improvement']}x better) | {config.test_steps} | {rows['retrofit']['sample_seconds']} | {fit['seconds']} |",
    ]
    result["table"] = "\n".join(lines)
    print(result["table"])
    if args.figure:
        Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
        Path(args.figure).write_bytes((Path(args.run_dir) / "langevin_path.png").read_bytes())
    write_json(args.json, result)


def ae_config(settings: dict) -> AEConfig:
    """An AEConfig from JSON-style settings, a ``recipe`` among them applied as ``pretrain-ae --recipe`` does."""
    recipe = settings.pop("recipe", None)
    if recipe is None:
        return AEConfig(**settings)
    full, _ = apply_recipe("pretrain-ae", field_defaults(AEConfig) | settings | {"recipe": recipe}, set(settings))
    return AEConfig(**full)


if __name__ == "__main__":
    main()
