"""Pictures and summaries of a run: sample grids, the Langevin path figure, the training
curve, and the before/after comparison written at the end of a fit."""

from __future__ import annotations

import csv
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from matplotlib.figure import Figure
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from hatrefine.files.jsonfiles import atomic_write
from hatrefine.files.names import EVAL_SAMPLES
from hatrefine.files.npz import save_npz
from hatrefine.files.quality import write_quality

if TYPE_CHECKING:
    from hatrefine.models.refiner import HatRefiner


def grid(images: torch.Tensor, nrow: int = 8) -> torch.Tensor:
    """A (3, H, W) grid in [0, 1] of images in [-1, 1]."""
    return make_grid(images[:64].detach().float().cpu().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """A PNG grid of images in [-1, 1], written atomically (a reader never sees half a file)."""
    atomic_write(path, lambda tmp: save_image(grid(images, nrow), tmp, format="png"))


def save_figure(fig, path: str | Path, dpi: int) -> None:
    """Write a matplotlib figure as PNG atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


def save_pair_figure(left: torch.Tensor, right: torch.Tensor, titles: tuple[str, str], out: str | Path) -> None:
    """Two image grids side by side (the first 64 of each), titled: a before/after figure."""
    fig = Figure(figsize=(9, 5.2), layout="constrained")
    for ax, imgs, title in zip(fig.subplots(1, 2), (left[:64], right[:64]), titles):
        ax.imshow(grid(imgs).permute(1, 2, 0).numpy())
        ax.set_title(title)
        ax.axis("off")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, Path(out), 120)


def visible_scale(frames: torch.Tensor) -> float:
    """The factor that stretches the largest absolute value of ``frames`` to 1 (1 when all are 0), rounded to 2 significant digits."""
    peak = float(frames.abs().max())
    return float(f"{1.0 / peak:.2g}") if peak > 0 else 1.0


def path_figure(path: dict[str, torch.Tensor], out: str | Path, frame_steps: list[int]) -> None:
    """What moves along each chain (those ``path`` holds; a latent-prior chain has X = G(Z) only),
    columns along the Langevin path: X; G(Z), the latent's path through the generator; the change
    X - X_0 since the first frame; and Y. The last two are signed (grey is 0) and stretched per chain
    so that their largest value is visible, with the factor in the row's label."""
    n_frames, n_chains = path["x"].shape[:2]
    rows, labels = [], []
    for i in range(n_chains):
        x = path["x"][:, i]
        parts = [("X", x), ("G(Z)", path["g"][:, i] if "g" in path and "y" in path else None), ("X - X_0", x - x[:1])]
        parts.append(("Y", path["y"][:, i] if "y" in path else None))
        for label, frames in parts:
            if frames is None:
                continue
            if label in ("X - X_0", "Y"):
                factor = visible_scale(frames)
                frames, label = (frames * factor).clamp(-1, 1), f"{label} x{factor:g}"
            rows.append(frames)
            labels.append(label)
    img = make_grid(torch.cat(rows), nrow=n_frames, normalize=True, value_range=(-1, 1), pad_value=1.0)
    h = img.shape[1] / len(rows)
    fig = Figure(figsize=(1.0 + 0.9 * n_frames, 0.9 * len(rows)))
    ax = fig.subplots()
    ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_yticks([h * (r + 0.5) for r in range(len(rows))], labels, fontsize=7)
    ax.set_xticks([img.shape[2] / n_frames * (f + 0.5) for f in range(n_frames)], [str(s) for s in frame_steps], fontsize=7)
    ax.set_xlabel("Langevin step")
    ax.set_title("Langevin paths from Y = 0 (signed rows: grey is 0)" if "y" in path else "prior Langevin paths on Z (signed rows: grey is 0)")
    fig.tight_layout()
    save_figure(fig, out, 120)


def training_curve(log_csv: str | Path, out: str | Path, rollbacks: list[dict] | None = None, growth_limit: float | None = None, window: int = 50) -> None:
    """What tells whether a fit is healthy: the raw energies of data and samples (their level is
    free), the energy gap |E_data - E_samples| per window of updates with its growth from one
    window to the next against the divergence guard's limit (``growth_limit``), the rollbacks
    (red lines), and the residual norm."""
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    step = [int(r["step"]) for r in rows]
    col = {k: [float(r[k]) for r in rows] for k in ("energy_data", "energy_samples", "residual_norm")}
    gap = [abs(d - s) for d, s in zip(col["energy_data"], col["energy_samples"])]
    ends = list(range(window, len(rows) + 1, window))
    medians = [statistics.median(gap[e - window : e]) for e in ends]
    growth = [b / a if a > 0 else float("inf") for a, b in zip(medians, medians[1:])]
    fig = Figure(figsize=(14, 3.6))
    a, b, c = fig.subplots(1, 3)
    a.plot(step, col["energy_data"], label="H(data) / T")
    a.plot(step, col["energy_samples"], label="H(samples) / T")
    a.set_title("energies (their level is free)")
    a.legend()
    b.plot(step, gap, color="C3", alpha=0.25, label="|E_data - E_samples|")
    if medians:
        b.plot([step[e - 1] for e in ends], medians, "o-", color="C3", label=f"median of {window} updates")
    b.set_yscale("symlog")
    b.set_title("energy gap and its growth per window")
    b.legend(loc="upper left", fontsize=8)
    if growth:
        g = b.twinx()
        g.plot([step[e - 1] for e in ends[1:]], growth, "s--", color="C0", ms=3, label="growth x per window")
        if growth_limit is not None and growth_limit != float("inf"):
            g.axhline(growth_limit, color="C0", lw=0.8, ls=":", label=f"guard limit x{growth_limit:g}")
        g.set_ylabel("growth per window", color="C0")
        g.legend(loc="upper right", fontsize=8)
    c.plot(step, col["residual_norm"], color="C2")
    c.set_title("mean ||Y|| of samples")
    for ax in (a, b, c):
        ax.set_xlabel("step")
        for r in rollbacks or []:
            ax.axvline(r["step"], color="red", alpha=0.5)
    if rollbacks:
        fig.suptitle(f"{len(rollbacks)} rollback(s) (red): " + "; ".join(f"step {r['step']}: {r['reason']}" for r in rollbacks)[:160], fontsize=9)
    fig.tight_layout()
    save_figure(fig, out, 110)


def before_after(refiner: "HatRefiner", out: Path, n: int, seed: int, calibration: dict | None = None, progress: bool = True) -> dict:
    """Compare the generator alone with the Hat EBM (or a latent-prior run) on the same starting latents; write
    ``before_after.png``, ``langevin_path.png``, ``samples.npz`` (x refined, g the generator's, z0) and ``quality.json`` (with ``calibration``, if
    given), print the quality line: the quick classifier's distance (LeNet for digits, the emoji
    classifier for 3x32x32 colour) with recall, coverage and class changes."""
    from hatrefine.data import load_images
    from hatrefine.evaluation.metrics import (
        SURE,
        class_changes,
        class_histogram,
        class_probabilities,
        feature_scores,
        features,
        load_classifier,
        quick_net,
    )

    c, G, label = refiner.config, refiner.generator, refiner.label
    rng = torch.Generator(refiner.device).manual_seed(seed + 1)
    z0 = G.sample_latent(n, generator=rng)
    t0 = time.perf_counter()
    sampler = refiner.sampler()
    after, first = [], None
    for s in tqdm(range(0, n, 250), desc="before/after samples", unit="batch", disable=not progress, dynamic_ncols=True):
        res = sampler.sample(z0[s : s + 250], generator=rng, path_frames=8 if s == 0 else 0, path_chains=4)
        first = first if first is not None else res
        after.append(res.x)
    after = torch.cat(after)
    sample_seconds = time.perf_counter() - t0
    with torch.no_grad():
        before = torch.cat([G(z0[s : s + 250]) for s in range(0, n, 250)])

    save_npz(out / EVAL_SAMPLES, x=after, g=before, z0=z0)
    K = refiner.sampling.langevin_steps
    frame_steps = sorted({round(i * K / 7) for i in range(8)})
    path_figure(first.path, out / "langevin_path.png", frame_steps)

    result = {"n_samples": n, "langevin_steps": K, "temperature": refiner.sampling.temperature, "sample_seconds": round(sample_seconds, 2), "seed": seed}
    spec = quick_net(G.image_shape)
    if spec is not None:
        reference = load_images(c.data, G.image_shape, split="train", root=c.data_root)
        net = load_classifier(G.image_shape).to(refiner.device)
        real = features(net, reference)
        pr_before, pr_after = feature_scores(net, real, before), feature_scores(net, real, after)
        fd_before, fd_after = pr_before.pop("fd"), pr_after.pop("fd")
        p_before, p_after = class_probabilities(before, net), class_probabilities(after, net)
        changes = class_changes(p_before, p_after)
        changed, sure_changed = changes["class_changed"], changes["class_changed_if_sure"]
        held = load_images(c.data, G.image_shape, split="test", root=c.data_root)
        held_real = features(net, held)
        held_before, held_after = (feature_scores(net, held_real, x)["fd"] for x in (before, after))
        result |= {
            "metric": f"frechet_distance_{spec.name}",
            "n_reference": len(reference),
            "generator": round(fd_before, 3),
            "hat": round(fd_after, 3),
            "prdc_generator": pr_before,
            "prdc_hat": pr_after,
            "held_out": {"n_reference": len(held), "generator": round(held_before, 3), "hat": round(held_after, 3)},
            "classes_generator": class_histogram(p_before),
            "classes_hat": class_histogram(p_after),
            "class_sure": SURE,
            **changes,
        }
        chosen_there = " (where calibration chose T and K)" if calibration and "chosen" in calibration else ""
        line = (
            f"quality (Frechet distance in {spec.label} features, {n} samples, lower is better): "
            f"vs {len(reference)} training {spec.items} generator {fd_before:.3f} -> {label} {fd_after:.3f} ({100 * (fd_after / fd_before - 1):+.1f}%), "
            f"vs {len(held)} held-out {spec.items}{chosen_there} {held_before:.3f} -> {held_after:.3f} ({100 * (held_after / held_before - 1):+.1f}%); "
            f"recall {pr_before['recall']:.3f} -> {pr_after['recall']:.3f}, coverage {pr_before['coverage']:.3f} -> {pr_after['coverage']:.3f}; "
            f"{100 * changed:.1f}% of {spec.items} change class"
            + (f" ({100 * sure_changed:.1f}% of the {spec.items} {spec.label} labels at p >= {SURE:g})" if sure_changed is not None else "")
        )
    else:
        line = "quality: the quick distance needs a shipped classifier (1x32x32 digits, 3x32x32 colour); run `hatrefine eval` on sampled images for FID"
    result["line"] = line

    titles = ("generator G(z)", f"{label} (same starting z)")
    if "metric" in result:
        titles = (f"{titles[0]}\nFD {result['generator']:.3f}", f"{titles[1]}\nFD {result['hat']:.3f}")
    save_pair_figure(before, after, titles, out / "before_after.png")
    if calibration is not None:
        result["calibration"] = calibration
    write_quality(out, result)
    print(line)
    return result


def energy_histogram(scores: dict[str, torch.Tensor], out: str | Path, aurocs: dict[str, float] | None = None) -> None:
    """Overlaid histograms of H(x) / T, one per data set (the first is in-distribution)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    everything = torch.cat(list(scores.values()))
    lo, hi = torch.quantile(everything, 0.005).item(), torch.quantile(everything, 0.995).item()
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    for i, (name, s) in enumerate(scores.items()):
        label = f"{name} (in-distribution)" if i == 0 else f"{name}  AUROC {aurocs[name]:.3f}" if aurocs else name
        ax.hist(s.clamp(lo, hi).numpy(), bins=60, range=(lo, hi), alpha=0.5, density=True, label=label)
    ax.set_xlabel("energy H(x) / T  (higher = more out of distribution)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out, 120)
