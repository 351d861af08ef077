"""Evaluate a fitted embedded-MNIST run with its EMA and its raw hat weights at several K.

Quality figure: Frechet distance in LeNet features between 1,000 samples (same starting
latents for every variant) and the 4,500 embedded training digits.

    python benchmarks/run_variants.py runs/mnist-joint --steps 20,40 --json benchmarks/results/archive/run_variants_mnist.json
"""

import argparse
import json

import torch

from hatrefine import HatRefiner
from hatrefine.data import load_images
from hatrefine.evaluation.metrics import classifier_fd, load_lenet
from hatrefine.files.checkpoint import read_state_dict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--steps", default="20", help="comma-separated K values")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    rows = []

    refiner = HatRefiner.from_pretrained(args.run)
    reference, net = load_images("builtin:mnist", (1, 32, 32)), load_lenet()
    z0 = refiner.generator.sample_latent(args.n, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        rows.append({"variant": "generator", "fd_lenet": classifier_fd(refiner.generator(z0), reference, net)})
    print(f"generator          {rows[-1]['fd_lenet']:.3f}")
    state = read_state_dict(f"{args.run}/checkpoint/state.safetensors")
    weights = {"ema": {k: v.clone() for k, v in refiner.hat.state_dict().items()}, "raw": {k[4:]: v for k, v in state.items() if k.startswith("hat.")}}
    for name, sd in weights.items():
        refiner.hat.load_state_dict(sd)
        for k in (int(s) for s in args.steps.split(",")):
            sampler = refiner.sampler(k)
            x = torch.cat([sampler.sample(z0[i : i + 250], generator=torch.Generator().manual_seed(i)).x for i in range(0, args.n, 250)])
            rows.append({"variant": f"{name} weights", "langevin_steps": k, "fd_lenet": classifier_fd(x, reference, net)})
            print(f"{name} weights, K {k:3d}  {rows[-1]['fd_lenet']:.3f}", flush=True)
    if args.json:
        result = {"command": f"python benchmarks/run_variants.py {args.run} --steps {args.steps} --n {args.n}", "n_samples": args.n, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
