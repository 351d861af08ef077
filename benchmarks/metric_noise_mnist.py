"""Sampling noise of the quick metric: how much the LeNet distance, precision, recall, density
and coverage of the embedded generator's samples vary from one set of latents to another.

Ten sets of N generator samples (N = 500, the calibration's size, and 1,000) against the 500
held-out digits, the reference calibration scores on; mean and sample standard deviation of
each score. This is the noise calibration's ``SLACK`` (0.02 on recall and coverage) is set
against.

    python benchmarks/metric_noise_mnist.py --json benchmarks/results/metric_noise_mnist.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from hatrefine.calibration import SLACK
from hatrefine.evaluation import feature_scores
from hatrefine.data import load_images
from hatrefine.evaluation import features, load_lenet
from hatrefine.registry import load_generator

from common import header, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", type=int, default=10)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.n = [500, 1000]
    G, net = load_generator("builtin:mnist"), load_lenet()
    real = features(net, load_images("builtin:mnist", G.image_shape, split="test"))
    result = header(args, torch.device("cpu")) | {"reference": "builtin:mnist held-out split", "n_reference": len(real), "slack": SLACK, "scores": {}}
    for n in args.n:
        rows = []
        for i in range(args.sets):
            z = G.sample_latent(n, generator=torch.Generator().manual_seed(args.seed + i))
            with torch.no_grad():
                rows.append(feature_scores(net, real, torch.cat([G(z[s : s + 250]) for s in range(0, n, 250)])))
        result["scores"][str(n)] = {k: {"mean": round(float(np.mean([r[k] for r in rows])), 4), "std": round(float(np.std([r[k] for r in rows], ddof=1)), 4)} for k in rows[0]}
        print(n, result["scores"][str(n)], flush=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
