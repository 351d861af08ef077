"""Live training curves for TensorBoard (``--tensorboard``): every row a trainer logs to
``log.csv`` goes to ``RUN/tensorboard/`` as scalars (with the energy gap |E_data - E_samples|
and the rollbacks so far), and the sample grids as images.

    tensorboard --logdir runs/

TensorBoard is an optional extra (``pip install hatrefine[tensorboard]``). A resumed or
rolled-back run reopens the log with ``purge_step`` at the step it continues from, so the
curves go on without duplicate steps.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import torch

from hatrefine.errors import HatrefineError

EVENTS_DIR = "tensorboard"


def require_tensorboard() -> None:
    """One line, before anything is written, when the package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise HatrefineError("--tensorboard needs the tensorboard package: pip install 'hatrefine[tensorboard]' (or leave --tensorboard out)")


class EventLog:
    """A SummaryWriter on ``out/tensorboard`` that takes the trainer's log rows."""

    def __init__(self, out: Path, first_step: Optional[int] = None):
        require_tensorboard()
        self.dir = Path(out) / EVENTS_DIR
        self.writer = None
        self.reopen(first_step)

    def reopen(self, first_step: Optional[int]) -> None:
        """(Re)start the log; events from ``first_step`` on, written before, are discarded by TensorBoard."""
        from torch.utils.tensorboard import SummaryWriter

        if self.writer is not None:
            self.writer.close()
        self.writer = SummaryWriter(str(self.dir), purge_step=first_step)

    def rows(self, rows: list[dict], rollbacks: Optional[int] = None) -> None:
        """Every number of each row as a scalar at its step (and the rollbacks so far, if given)."""
        for row in rows:
            step = int(row["step"])
            for name, value in row.items():
                if name != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(name, value, step)
            if "energy_data" in row and "energy_samples" in row:
                self.writer.add_scalar("energy_gap", abs(row["energy_data"] - row["energy_samples"]), step)
            if rollbacks is not None:
                self.writer.add_scalar("rollbacks", rollbacks, step)
        self.writer.flush()

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """A (3, H, W) grid in [0, 1]."""
        self.writer.add_image(tag, grid, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
