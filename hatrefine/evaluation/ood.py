"""Out-of-distribution scoring (paper sec. 4.4): the hat network's energy H(x) / T as a score
(a latent-prior run scores by its own ``score``: the posterior energy of the image).

Higher energy = less like the training data. ``auroc`` is the area under the ROC curve
with the out-of-distribution set as the positive class: 1.0 when every OOD image has a
higher energy than every in-distribution image, 0.5 for a score that cannot tell them apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from hatrefine.data import load_images

if TYPE_CHECKING:
    from hatrefine.models.refiner import HatRefiner


def auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    """P(out > in) + P(out = in) / 2 over all pairs (the Mann-Whitney statistic, ties averaged)."""
    s = torch.cat([in_scores.flatten(), out_scores.flatten()]).double()
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    mean_rank = counts.cumsum(0).double() - (counts - 1).double() / 2  # 1-based rank of each distinct value, ties averaged
    n_in, n_out = in_scores.numel(), out_scores.numel()
    u = mean_rank[inverse][n_in:].sum() - n_out * (n_out + 1) / 2.0
    return float(u / (n_in * n_out))


@torch.no_grad()
def energies(refiner: "HatRefiner", images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The run's score (``refiner.score``: H(x) / T for a Hat EBM) of each image (N, C, H, W) in [-1, 1], on CPU."""
    refiner.generator.check_image(images, what="images to score")
    return torch.cat([refiner.score(x.to(refiner.device)).float().cpu() for x in images.split(batch_size)])


def ood_scores(
    refiner: "HatRefiner",
    in_data: str,
    ood_data: list[str],
    split: str = "test",
    n: Optional[int] = None,
    data_root: Optional[str] = None,
    batch_size: int = 256,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Energies of ``in_data`` (its ``split``) and of each OOD spec, and each set's AUROC.

    Returns a JSON-ready summary and the energies by spec (for a histogram)."""
    shape = refiner.generator.image_shape
    scores = {in_data: energies(refiner, load_images(in_data, shape, split=split, root=data_root, limit=n), batch_size)}
    rows = []
    for spec in ood_data:
        scores[spec] = energies(refiner, load_images(spec, shape, split=split, root=data_root, limit=n), batch_size)
        rows.append({"data": spec, "n": len(scores[spec]), "auroc": auroc(scores[in_data], scores[spec]), "mean_energy": scores[spec].mean().item()})
    summary = {
        "in_data": {"data": in_data, "split": split, "n": len(scores[in_data]), "mean_energy": scores[in_data].mean().item()},
        "ood": rows,
    }
    return summary, scores
