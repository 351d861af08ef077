"""Any fitted run -> its model: a Hat EBM (``fit``, ``synthesize``) or a latent-space EBM prior
(``fit-prior``, ``hierarchical``), by what its ``config.json`` holds. ``sample``, ``refine``,
``ood`` and ``push`` load runs through here."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Union

from hatrefine.errors import HatrefineWarning
from hatrefine.files.checkpoint import has_checkpoint, stopped_at
from hatrefine.models.latent_prior import LatentPriorRefiner, is_prior_run
from hatrefine.models.pretrained import run_directory
from hatrefine.models.refiner import HatRefiner

Model = Union[HatRefiner, LatentPriorRefiner]


def load_run(path: str | Path, device: Optional[str] = None, checkpoint: Optional[str] = None) -> Model:
    """The model of the run at ``path`` (a directory, ``hf:ORG/NAME`` or ``hatebm:NAME``; ``checkpoint``:
    for ``hatebm:``, the authors' downloaded release folder)."""
    directory = Path(run_directory(path, checkpoint))
    warn_if_unfinished(directory)
    return (LatentPriorRefiner if is_prior_run(directory) else HatRefiner).from_pretrained(directory, device=device)


def warn_if_unfinished(directory: Path) -> None:
    """Warn when a run directory's fit stopped before its last update (above all at step 0: an untrained energy)."""
    stop = stopped_at(directory) if has_checkpoint(directory) else None
    if stop is None:
        return
    step, total = stop
    state = "no update yet: its energy is untrained, so samples are the generator's with Langevin noise" if step == 0 else "an unfinished fit"
    warnings.warn(
        f"{directory} stopped at step {step} of {total} ({state}); its command with --out {directory} --resume continues it", HatrefineWarning, stacklevel=3
    )
