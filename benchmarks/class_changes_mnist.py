"""Which digits the refinement turns into other digits, and what a smaller latent step trades.

On a fitted run of the embedded default (the main job's, by default), chains start from
generator latents and run at the run's own sampling settings with the latent step eps_z
scaled by each of ``--eps-z-factors`` (0 moves the residual alone), and, a second lever, at
the run's eps_z with a pull back to the start, ``W / 2 * ||z - z0||^2`` added to the energy of
Z, for each W of ``--anchor-weights`` (a proximal refinement, as in transport-cost refiners;
not in the product: it traced the same trade, docs/experiments.md). For each setting: the
LeNet distance, recall and coverage, the share of digits whose LeNet label changes, and that
share split by how sure LeNet was of the generator's digit (its top probability at least
``--sure`` or not) — the test of "mostly malformed digits change class".

Two sets of latents, so that a setting chosen here is reported on other ones: ``select``
(scored against the 500 held-out digits) and ``report`` (against the 4,500 training digits).
Resumable: rows already in ``--json`` are kept.

    python benchmarks/class_changes_mnist.py --run runs/mnist-joint --json benchmarks/results/class_changes_mnist.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import header, write_json

from hatrefine.data import load_images
from hatrefine.evaluation.metrics import (
    SURE,
    class_changes,
    class_probabilities,
    feature_scores,
    features,
    load_lenet,
)
from hatrefine.models.refiner import HatRefiner
from hatrefine.sampling.langevin import LangevinSampler

SETS = {"select": ("test", 10), "report": ("train", 20)}  # latent set: (reference split, latent seed)


class AnchoredSampler(LangevinSampler):
    """``base`` with ``weight / 2 * ||z - anchor||^2`` added to the energy of Z."""

    def __init__(self, base: LangevinSampler, weight: float):
        self.__dict__.update(base.__dict__)
        self.weight, self.anchor = weight, None

    def _move_z(self, z, grad, *args):
        return super()._move_z(z, grad + self.weight * (z.detach() - self.anchor), *args)

    def sample(self, z, *args, **kwargs):
        self.anchor = z.detach()
        return super().sample(z, *args, **kwargs)


@torch.no_grad()
def generator_images(G, z: torch.Tensor) -> torch.Tensor:
    return torch.cat([G(z[s : s + 250]) for s in range(0, len(z), 250)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/mnist-joint")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--eps-z-factors", default="1,0.5,0.25,0")
    p.add_argument("--anchor-weights", default="3e3,1e4,3e4,1e5", help="'' for none")
    p.add_argument("--sure", type=float, default=SURE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    refiner = HatRefiner.from_pretrained(args.run, device="cpu")
    G, s, net = refiner.generator, refiner.sampling, load_lenet()
    old = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).is_file() else {}
    result = header(args, torch.device("cpu")) | {
        "run": args.run,
        "sampling": {"temperature": s.temperature, "langevin_steps": s.langevin_steps, "eps_z": s.eps_z, "eps_y": s.eps_y},
        "sure": args.sure,
        "sets": old.get("sets", {}),
    }
    for name, (split, latent_seed) in SETS.items():
        real = features(net, load_images("builtin:mnist", G.image_shape, split=split))
        z0 = G.sample_latent(args.n, generator=torch.Generator().manual_seed(latent_seed))
        before = generator_images(G, z0)
        p0 = class_probabilities(before, net)
        entry = result["sets"].setdefault(name, {"reference": f"builtin:mnist {split} split", "latent_seed": latent_seed, "rows": {}})
        entry["generator"] = feature_scores(net, real, before) | {"unsure_share": round((p0.max(1).values < args.sure).double().mean().item(), 4)}
        settings = {f"eps_z x{f:g}": (f, 0.0) for f in map(float, args.eps_z_factors.split(","))}
        settings |= {f"anchor {w:g}": (1.0, w) for w in map(float, filter(None, args.anchor_weights.split(",")))}
        for key, (factor, weight) in settings.items():
            if key in entry["rows"]:
                continue
            t0 = time.perf_counter()
            sampler = refiner.sampler(eps_z=s.eps_z * factor)
            sampler = AnchoredSampler(sampler, weight) if weight else sampler
            after = torch.cat([sampler.sample(z0[i : i + 250], generator=torch.Generator().manual_seed(latent_seed + i)).x for i in range(0, args.n, 250)])
            seconds = round(time.perf_counter() - t0, 1)
            entry["rows"][key] = (
                {"eps_z": s.eps_z * factor, "anchor_weight": weight, "sample_seconds": seconds}
                | feature_scores(net, real, after)
                | class_changes(p0, class_probabilities(after, net), args.sure)
            )
            print(name, key, {k: entry["rows"][key][k] for k in ("fd", "recall", "coverage", "class_changed", "class_changed_if_sure")}, flush=True)
            write_json(args.json, result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
