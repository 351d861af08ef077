"""Sampling settings chosen by the fit: the test-time temperature and K, picked on held-out data.

For each temperature (the run's test-time T, which is the training T unless
``--temperature-test`` set it, times ``TEMPERATURE_FACTORS``) and each K around the test-time K
(``STEP_FACTORS``), chains start from the same latents; their samples are scored
against the data's held-out split (``test``: never trained on) with the quick metric — the
shipped LeNet's features for 1x32x32 digits, the shipped emoji classifier's for 3x32x32 colour
images, Inception's otherwise — as a Frechet distance,
precision, recall, density and coverage (``evaluation``).

The criterion counts fidelity and diversity: the lowest Frechet distance among the settings
whose recall and coverage are both at least the generator's own minus ``SLACK``; when no
setting keeps them, the one that loses least of them (the largest of the two shortfalls, smallest).
With a shipped classifier each grid row also records the share of images that change class (not part of
the criterion; docs/results.md has what it costs to change fewer).
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
from torch import nn

from hatrefine.data import load_images
from hatrefine.errors import HatrefineError
from hatrefine.evaluation.metrics import (
    QUICK_NETS,
    class_changes,
    class_probabilities,
    feature_scores,
    features,
    load_classifier,
    quick_net,
)
from hatrefine.sampling.langevin import LangevinSampler

TEMPERATURE_FACTORS = (1.0, 1 / 1.5, 1 / 2, 1 / 3)  # x the config's test-time T
STEP_FACTORS = (0.5, 1.0, 1.5)
SLACK = 0.02  # recall and coverage may fall this far below the generator's (about their sampling noise at 500 images)


METRICS = ("quick", "inception")


def quick_metric_net(image_shape, device: torch.device, inception_on_cpu: bool = True, metric: str = "quick") -> tuple[nn.Module, str]:
    """The feature network of ``metric``: ``quick``, the product's quick metric (the shipped LeNet
    for 1x32x32 digits, the emoji classifier for 3x32x32 colour images, else the FID Inception), or ``inception``, the FID Inception for any images.
    Inception is refused on a CPU unless ``inception_on_cpu`` (there the grid takes 10-30 minutes)."""
    if metric not in METRICS:
        raise HatrefineError(f"unknown calibration metric {metric!r}; use {' or '.join(METRICS)}")
    spec = quick_net(image_shape)
    if metric == "quick" and spec is not None:
        return load_classifier(image_shape).to(device), spec.name
    if device.type == "cpu" and not inception_on_cpu:
        raise HatrefineError(
            "for images without a shipped quick classifier (1x32x32 digits, 3x32x32 colour) calibration scores Inception features, 10-30 minutes on a CPU; "
            "run `hatrefine calibrate --run RUN` when that suits"
        )
    from hatrefine.evaluation.inception import load_inception

    return load_inception("auto", device), "inception"


def choose(grid: list[dict], generator: dict, slack: float = SLACK) -> tuple[dict, bool]:
    """The criterion of the module docstring; returns (chosen row, whether it keeps recall and coverage)."""
    shortfall = [max(generator["recall"] - g["recall"], generator["coverage"] - g["coverage"]) for g in grid]
    keep = [g for g, s in zip(grid, shortfall) if s <= slack]
    if keep:
        return min(keep, key=lambda g: g["fd"]), True
    return grid[int(np.argmin(shortfall))], False


@torch.no_grad()
def _generator_images(refiner, z: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([refiner.generator(z[s : s + batch_size]) for s in range(0, len(z), batch_size)])


def chain_ends(sampler: LangevinSampler, z0: torch.Tensor, steps: list[int], seed: int, batch_size: int) -> tuple[dict[int, torch.Tensor], dict[int, float]]:
    """The end states of K-step chains from ``z0`` for each K in ``steps``, and the wall seconds
    a K-step run of all chains took. With a constant schedule one chain per chunk is continued
    from K to K (its state after K steps is a K-step chain's end state, noise included; its
    seconds are those up to K); otherwise each K runs its own chains."""
    constant = sampler.step_schedule.kind == "constant" and sampler.noise_schedule.kind == "constant"
    ends: dict[int, list[torch.Tensor]] = {K: [] for K in steps}
    seconds = dict.fromkeys(steps, 0.0)
    for s in range(0, len(z0), batch_size):
        rng = torch.Generator(z0.device).manual_seed(seed + s)
        z, y, done, elapsed = z0[s : s + batch_size], None, 0, 0.0
        for K in steps:
            if not constant:
                rng, z, y, done, elapsed = torch.Generator(z0.device).manual_seed(seed + s), z0[s : s + batch_size], None, 0, 0.0
            sampler.n_steps = K - done
            t0 = time.perf_counter()
            res = sampler.sample(z, y, generator=rng)
            z, y, done, elapsed = res.z, res.y, K, elapsed + time.perf_counter() - t0
            ends[K].append(res.x)
            seconds[K] += elapsed
    return {K: torch.cat(v) for K, v in ends.items()}, seconds


def calibrate(
    refiner,
    data: str,
    data_root: Optional[str] = None,
    n: int = 500,
    seed: int = 0,
    batch_size: int = 250,
    net: Optional[nn.Module] = None,
    temperature_factors=TEMPERATURE_FACTORS,
    step_factors=STEP_FACTORS,
    metric: str = "quick",
) -> dict:
    """Score the grid on ``data``'s held-out split and choose (see the module docstring).

    Returns a JSON-ready record: ``metric``, ``criterion``, ``n_samples``, ``n_reference``,
    ``generator`` (its scores), ``grid`` (one row per temperature and K), ``chosen``
    (``temperature``, ``langevin_steps``) and ``keeps_recall``. ``net``: the feature network
    (default: ``metric``'s, see ``quick_metric_net``)."""
    c, G, dev = refiner.config, refiner.generator, refiner.device
    if net is None:
        net, metric = quick_metric_net(G.image_shape, dev, metric=metric)
    else:
        metric = "given"
    held = load_images(data, G.image_shape, split="test", root=data_root)
    real = features(net, held)
    z0 = G.sample_latent(n, generator=torch.Generator(dev).manual_seed(seed + 2))
    before = _generator_images(refiner, z0, batch_size)
    generator = feature_scores(net, real, before)
    classifies = metric in {q.name for q in QUICK_NETS.values()}  # a shipped classifier: its labels exist
    labels = class_probabilities(before, net) if classifies else None  # the trade the criterion does not see: images changing class
    steps = sorted({max(1, round(c.test_steps * f)) for f in step_factors})
    grid = []
    for factor in temperature_factors:
        t = c.test_temperature * factor
        images, _ = chain_ends(refiner.sampler(steps[-1], temperature=t), z0, steps, seed, batch_size)
        for K in steps:
            changes = {} if labels is None else class_changes(labels, class_probabilities(images[K], net))
            grid.append({"temperature": t, "temperature_factor": round(factor, 4), "langevin_steps": K, **feature_scores(net, real, images[K]), **changes})
    chosen, kept = choose(grid, generator)
    return {
        "metric": metric,
        "criterion": f"lowest Frechet distance among settings whose recall and coverage are at least the generator's minus {SLACK}",
        "data": f"{data} (held-out split)",
        "n_samples": n,
        "n_reference": len(held),
        "generator": generator,
        "grid": grid,
        "chosen": {"temperature": chosen["temperature"], "langevin_steps": chosen["langevin_steps"]},
        "keeps_recall": kept,
    }
