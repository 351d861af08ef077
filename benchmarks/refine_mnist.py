"""The published comparison: the embedded generator alone, DDLS, and the Hat EBM (joint mode).

One process, on the embedded default generator (``builtin:mnist``) and the embedded digits:
fit the Hat EBM, draw N samples from each method (DDLS with as many Langevin steps as the
Hat EBM samples with, once with the raw discriminator logit and once calibrated as DDLS
recommends: a logistic head fitted on real versus generated digits), and compute the FID
of each against the same reference statistics (the 4,500 embedded training digits).
Prints a markdown table and writes it with every setting to JSON.

    python benchmarks/refine_mnist.py --json benchmarks/results/refine_mnist.json

The Hat EBM fit defaults to the GAN's own discriminator as the hat (``hat``
"discriminator"), 900 updates, K = 20, simultaneous Y and Z updates, Adam 1e-4 (the rest:
``FitConfig``'s defaults, the input-gradient penalty included; the JSON records every setting); it samples at the T and K its calibration chose on the held-out
digits (``hat_settings_chosen_by`` in the JSON), never at values set by hand. When that T is
not the training one, the Hat EBM is also sampled at the training temperature, as a row of its own.

``--run DIR`` reuses a fitted run instead of fitting (fit_seconds is then taken from it);
``--temperature T`` samples the Hat EBM at T instead of the run's calibrated one (recorded as such).
``--no-ddls`` leaves out the DDLS rows, e.g. to measure the Hat EBM of other fit seeds on the
same latents: ``--no-ddls --fit '{..., "seed": 1}'`` (``--seed`` sets the latents and noise).

Next to FID every row has the quick metric of the embedded digits: the Frechet distance in the
shipped LeNet's features (against the same 4,500 digits) and LeNet's class histogram (label
entropy, mean confidence). ``--no-inception`` measures only those (seconds instead of half an
hour on a CPU), e.g. on the run of an earlier FID measurement: ``--run RUN --no-inception``.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import numpy as np
import torch
from common import classifier_scores, header, inception_fids, measured, write_json

from hatrefine import HatRefiner
from hatrefine.data import load_images
from hatrefine.distributed import resolve_device
from hatrefine.evaluation.metrics import quick_net
from hatrefine.files.jsonfiles import read_json
from hatrefine.models.latent_prior import LatentPriorRefiner
from hatrefine.networks.registry import load_discriminator, load_generator
from hatrefine.sampling.ddls import DDLS
from hatrefine.sampling.density_ratio import calibrate
from hatrefine.settings.config import FitConfig
from hatrefine.settings.prior import PriorConfig
from hatrefine.training.prior_trainer import PriorTrainer
from hatrefine.training.trainer import Trainer

FIT = '{"steps": 900, "langevin_steps": 20, "lr": 1e-4, "joint_update": "simultaneous", "hat": "discriminator"}'


def main(generator: str = "builtin:mnist", fit: str = FIT, prior_steps: int = 0, doc: str = __doc__) -> None:
    """The comparison on an embedded generator (its own data is the reference); refine_twemoji.py runs it on the colour one."""
    GENERATOR = DATA = generator
    name = generator.split(":")[1]
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="samples per method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default=None, help="reuse this fitted run instead of fitting")
    p.add_argument("--run-dir", default=f"runs/benchmark-{name}", help="where to fit (replaced)")
    p.add_argument("--fit", default=fit, help='FitConfig overrides as JSON, e.g. \'{"steps": 900, "lr": 1e-4}\'')
    p.add_argument("--prior-steps", type=int, default=prior_steps, help="also fit a latent EBM prior (fit-prior's defaults, this many updates; 0: no row)")
    p.add_argument("--prior-run", default=None, help="reuse this fitted latent-prior run instead of fitting one")
    p.add_argument("--noise-sets", type=int, default=0, help="also score the generator on this many other latent sets (the metrics' sampling noise)")
    p.add_argument("--ddls-eps", type=float, default=0.1, help="DDLS step size (0.1 = DDLS's step 0.01)")
    p.add_argument("--ddls-temperature", type=float, default=1.0)
    p.add_argument("--ddls-noise", type=float, default=1.0)
    p.add_argument("--calibrate-n", type=int, default=1000, help="real digits (and as many generated) for DDLS's calibration")
    p.add_argument("--inception", default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--temperature", type=float, default=None, help="sample the Hat EBM at this T instead of the run's calibrated one")
    p.add_argument("--batch-size", type=int, default=250, help="chains per chunk when sampling")
    p.add_argument("--no-ddls", action="store_true", help="only the generator and Hat EBM rows")
    p.add_argument("--no-inception", action="store_true", help="only the quick classifier's columns, no FID")
    p.add_argument("--json", default=None, help="write the result here")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    result = header(args, device)

    # 1. fit the Hat EBM (or reuse a fitted run)
    fit: dict = {}
    if args.run:
        refiner, run = HatRefiner.from_pretrained(args.run, device=args.device), Path(args.run)
        fit["seconds"] = read_json(run / "benchmark_fit.json")["seconds"] if (run / "benchmark_fit.json").is_file() else None
    else:
        overrides = {"generator": GENERATOR, "seed": args.seed, "device": args.device, "eval_samples": 0, **json.loads(args.fit)}
        recipe = overrides.pop("recipe", None)
        config = FitConfig.from_recipe(recipe, **overrides) if recipe else FitConfig(**overrides)
        with measured(fit):
            trainer = Trainer(config, args.run_dir, overwrite=True)
            trainer.run(progress=False)
        refiner, run = trainer.refiner(), Path(args.run_dir)
        (run / "benchmark_fit.json").write_text(json.dumps(fit))
    result["fit_seconds"], result["fit"] = fit["seconds"], fit
    result["hat_settings"] = refiner.config.to_dict()
    K = refiner.sampling.langevin_steps
    result["langevin_steps"] = K
    result["hat_settings_chosen_by"] = "--temperature" if args.temperature is not None else refiner.sampling.chosen_by

    # 2. samples from each method, from the same starting latents
    G = load_generator(GENERATOR).to(device)
    rng = torch.Generator(device).manual_seed(args.seed)
    z0 = G.sample_latent(args.n, generator=rng)
    chunks = range(0, args.n, args.batch_size)

    def chains(sampler):
        return torch.cat([sampler.sample(z0[s : s + args.batch_size], generator=torch.Generator(device).manual_seed(args.seed + s)).x for s in chunks])

    methods = {"generator": lambda: torch.cat([G(z0[s : s + args.batch_size]).detach() for s in chunks])}
    labels = {"generator": (f"generator ({GENERATOR})", 0, "-")}
    if not args.no_ddls:
        D = load_discriminator(GENERATOR).to(device)
        ddls_args = {"eps": args.ddls_eps, "temperature": args.ddls_temperature, "noise": args.ddls_noise}
        calibration = calibrate(G, D, load_images(DATA, G.image_shape, split="train", limit=args.calibrate_n), seed=args.seed)
        ddls, ddls_calibrated = DDLS(G, D, n_steps=K, **ddls_args), DDLS(G, D, n_steps=K, **ddls_args, calibration=calibration)
        ddls_settings = {"langevin_steps": K, **ddls_args}
        result["ddls_settings"] = ddls_settings | {"calibrated": False}
        result["ddls_calibrated_settings"] = ddls_settings | {
            "calibrated": True,
            "calibrate_n": args.calibrate_n,
            "logit_scale": round(calibration.scale, 4),
            "logit_bias": round(calibration.bias, 4),
            "discriminator_temperature": round(calibration.temperature, 4),
        }
        print(f"DDLS calibration: sigmoid({calibration.scale:.4g} * d + {calibration.bias:.4g}); discriminator temperature {calibration.temperature:.4g}")
        methods |= {"ddls": lambda: chains(ddls.sampler), "ddls_calibrated": lambda: chains(ddls_calibrated.sampler)}
        labels |= {
            "ddls": (f"DDLS (eps {args.ddls_eps}, T {args.ddls_temperature})", K, "-"),
            "ddls_calibrated": (f"DDLS, calibrated (logit x {calibration.scale:.2f})", K, "-"),
        }
    c = refiner.config
    t = refiner.sampling.temperature if args.temperature is None else args.temperature
    result["hat_sampling_temperature"] = t
    methods["hat"] = lambda: chains(refiner.sampler(temperature=t))
    if t != c.temperature:
        methods["hat_train_temperature"] = lambda: chains(refiner.sampler(temperature=c.temperature))
    if args.prior_steps or args.prior_run:
        prior = latent_prior(args, GENERATOR, Path(args.run_dir) / "prior", result)
        methods["latent_prior"] = lambda: chains(prior.sampler())
        labels["latent_prior"] = (f"latent EBM prior ({prior.config.steps} updates)", prior.sampling.langevin_steps, result["prior_fit_seconds"])
    for i in range(1, args.noise_sets + 1):  # the same generator on other latents: the noise of every score
        z_other = G.sample_latent(args.n, generator=torch.Generator(device).manual_seed(args.seed + 1000 * i))
        methods[f"generator_latents_{i}"] = lambda z=z_other: torch.cat([G(z[s : s + args.batch_size]).detach() for s in chunks])

    rows, images = {}, {}
    for name, draw in methods.items():
        record: dict = {}
        with measured(record):
            images[name] = draw().cpu()
        rows[name] = {"sample_seconds": record["seconds"], "sample_peak_rss_mib": record["peak_rss_mib"]}

    # 3. FID of each against the same reference statistics, and the LeNet distance and class histogram
    for name, scores in classifier_scores(images, DATA).items():
        rows[name] |= scores
    spec = quick_net(G.image_shape)
    quick_key = f"{spec.name}_fd"
    if not args.no_inception:
        scores, reference = inception_fids(images, DATA, args.inception, device)
        result |= reference
        for name in images:
            rows[name] |= scores[name]
            result[f"fid_{name}"] = scores[name]["fid"]
    result["rows"] = rows
    if args.noise_sets and not args.no_inception:
        sets = [rows["generator"]] + [rows[f"generator_latents_{i}"] for i in range(1, args.noise_sets + 1)]
        result["generator_noise"] = {
            k: {"mean": round(float(np.mean([r[k] for r in sets])), 4), "std": round(float(np.std([r[k] for r in sets], ddof=1)), 4)}
            for k in ("fid", "precision", "recall", "density", "coverage", quick_key)
        } | {"latent_sets": len(sets)}
    result["peak_rss_mib_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    # 4. the table
    mode = c.mode + (f" ({c.joint_update} updates)" if c.mode == "joint" and c.joint_update != "alternate" else "")
    labels |= {
        "hat": (f"Hat EBM, {mode}" + (f", sampling T {t:g}" if "hat_train_temperature" in rows else ""), K, result["fit_seconds"]),
        "hat_train_temperature": (f"Hat EBM, {mode}, sampling T {c.temperature:g} (as trained)", K, "same fit"),
    }
    lenet = f"{spec.label} distance | label entropy | confidence"
    if args.no_inception:
        lines = [f"| method | {lenet} | Langevin steps | sampling s | fit s |", "|---|---|---|---|---|---|---|"]
    else:
        lines = [
            f"| method | FID ({args.n} samples vs {result['n_reference']} {spec.items}) | vs generator | precision | recall | density | coverage | {lenet} | Langevin steps | sampling s | fit s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for name, (label, steps, fit_s) in labels.items():
        if name not in rows:
            continue
        r = rows[name]
        fid_cells = (
            ""
            if args.no_inception
            else f"{r['fid']:.2f} | {r['fid'] / rows['generator']['fid']:.2f}x | {r['precision']:.3f} | {r['recall']:.3f} | {r['density']:.3f} | {r['coverage']:.3f} | "
        )
        lines.append(
            f"| {label} | {fid_cells}{r[quick_key]:.2f} | {r['label_entropy']:.3f} | {r['confidence']:.3f} | {steps} | {r['sample_seconds']} | {fit_s} |"
        )
    result["table"] = "\n".join(lines)
    print(result["table"])
    print(f"peak memory: fit {fit.get('peak_rss_mib')} MiB RSS; process {result['peak_rss_mib_process']} MiB")
    write_json(args.json, result)


def latent_prior(args, generator: str, run: Path, result: dict) -> LatentPriorRefiner:
    """A latent EBM prior on ``generator`` (``--prior-run``, or fitted now with fit-prior's defaults and ``--prior-steps`` updates)."""
    if args.prior_run:
        run = Path(args.prior_run)
    else:
        record: dict = {}
        with measured(record):
            PriorTrainer(PriorConfig(generator=generator, steps=args.prior_steps, seed=args.seed, device=args.device, eval_samples=0), run, overwrite=True).run(
                progress=False
            )
        (run / "benchmark_fit.json").write_text(json.dumps(record))
    prior = LatentPriorRefiner.from_pretrained(run, device=args.device)
    result["prior_fit_seconds"] = read_json(run / "benchmark_fit.json")["seconds"] if (run / "benchmark_fit.json").is_file() else None
    result["prior_settings"] = prior.config.to_dict()
    return prior


if __name__ == "__main__":
    main()
