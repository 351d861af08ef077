"""Sampling noise of the metrics: how much the Frechet distance, precision, recall, density
and coverage of an embedded generator's samples vary from one set of latents to another.

``--features quick`` (LeNet for the digits, the emoji classifier for ``--generator
builtin:twemoji``): ten sets of N generator samples (N = 500, the calibration's size, and
1,000) against the held-out split, the reference calibration scores on; mean and sample
standard deviation of each score. This is the noise calibration's
``SLACK`` (0.02 on recall and coverage) is set against.

``--features inception``: sets of 2,000 samples against the 4,500 training digits in FID's
Inception, the protocol of the FID benchmarks (refine_mnist.py, refine_curves_mnist.py), so
that their rows can be read against the noise of FID, recall and coverage (about 3 minutes a
set on 2 CPU cores, plus 8 for the reference the first time).

    python benchmarks/metric_noise_mnist.py --json benchmarks/results/metric_noise_mnist.json
    python benchmarks/metric_noise_mnist.py --features inception --sets 5 --json benchmarks/results/metric_noise_inception_mnist.json
    python benchmarks/metric_noise_mnist.py --generator builtin:twemoji --features inception --sets 3 \
        --json benchmarks/results/metric_noise_inception_twemoji.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import header, inception_fids, write_json

from hatrefine.data import load_images
from hatrefine.evaluation.calibration import SLACK
from hatrefine.evaluation.metrics import feature_scores, features, load_classifier
from hatrefine.networks.registry import load_generator


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="builtin:mnist", help="builtin:mnist or builtin:twemoji (its data is the reference)")
    p.add_argument("--features", choices=("quick", "inception"), default="quick")
    p.add_argument("--sets", type=int, default=10)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    G = load_generator(args.generator)
    device = torch.device("cpu")

    def samples(n: int, i: int) -> torch.Tensor:
        z = G.sample_latent(n, generator=torch.Generator().manual_seed(args.seed + i))
        with torch.no_grad():
            return torch.cat([G(z[s : s + 250]) for s in range(0, n, 250)])

    if args.features == "quick":
        args.n = [500, 1000]
        net = load_classifier(G.image_shape)
        real = features(net, load_images(args.generator, G.image_shape, split="test"))
        result = header(args, device) | {"reference": f"{args.generator} held-out split", "n_reference": len(real), "slack": SLACK, "scores": {}}
        score_sets = {n: [feature_scores(net, real, samples(n, i)) for i in range(args.sets)] for n in args.n}
    else:
        args.n = [2000]
        scores, reference = inception_fids({str(i): samples(2000, i) for i in range(args.sets)}, args.generator, "auto", device)
        result = header(args, device) | reference | {"sets": scores, "scores": {}}
        score_sets = {2000: list(scores.values())}
    for n, rows in score_sets.items():
        result["scores"][str(n)] = {
            k: {"mean": round(float(np.mean([r[k] for r in rows])), 4), "std": round(float(np.std([r[k] for r in rows], ddof=1)), 4)} for k in rows[0]
        }
        print(n, result["scores"][str(n)], flush=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
