"""Any fitted run -> its model: a Hat EBM (``fit``, ``synthesize``) or a latent-space EBM prior
(``fit-prior``, ``hierarchical``), by what its ``config.json`` holds. ``sample``, ``refine``,
``ood`` and ``push`` load runs through here."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from hatrefine.models.latent_prior import LatentPriorRefiner, is_prior_run
from hatrefine.models.pretrained import run_directory
from hatrefine.models.refiner import HatRefiner

Model = Union[HatRefiner, LatentPriorRefiner]


def load_run(path: str | Path, device: Optional[str] = None, checkpoint: Optional[str] = None) -> Model:
    """The model of the run at ``path`` (a directory, ``hf:ORG/NAME`` or ``hatebm:NAME``; ``checkpoint``:
    for ``hatebm:``, the authors' downloaded release folder)."""
    directory = run_directory(path, checkpoint)
    return (LatentPriorRefiner if is_prior_run(directory) else HatRefiner).from_pretrained(directory, device=device)
