"""The loop every trainer shares (fit, synthesize, pretrain-ae): steps, logging, checkpoints,
roll-back on divergence, progress. A trainer supplies the parts that differ:

    train_step()       one update; returns its log row
    save_checkpoint()  everything --resume needs (raise ``Divergence`` to refuse bad weights)
    roll_back(reason)  back to the last checkpoint after a ``Divergence`` (trainers with a guard)
    postfix(row)       what the progress bar shows
    after_step()       per-update extras (sample grids)
    finish(progress)   the end-of-run figures and report

and the attributes ``out``, ``config`` (``steps``, ``save_every``, ``log_every``), ``step``,
``log`` (a ``RunLog``) and ``events`` (an ``EventLog`` or None).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from hatrefine.errors import HatrefineError
from hatrefine.files.checkpoint import (
    RunLog,
    discard_unstarted_run,
    disk_errors,
    has_checkpoint,
    load_optimizer,
    load_strict,
    optimizer_tensors,
    subdict,
)
from hatrefine.training.events import EventLog


class Divergence(Exception):
    """A training step went bad; the loop rolls the run back (``TrainingLoop.roll_back``)."""


class UpdateTimer:
    """Says once, after a few updates, what an update costs and how long the rest will take,
    so that nobody waits hours without knowing."""

    WARM = 1  # updates left out as start-up
    MEASURED = 3  # updates timed after those
    WORTH_SAYING = 60.0  # seconds left below which nothing is said

    def __init__(self, start: int, total: int):
        self.start, self.total, self.t0, self.done = start, total, None, False

    def tick(self, step: int) -> Optional[str]:
        if step >= self.total:
            self.done = True
        if self.done or step - self.start < self.WARM:
            return None
        if self.t0 is None:
            self.t0 = time.perf_counter()
            return None
        if step - self.start < self.WARM + self.MEASURED:
            return None
        self.done = True
        per = (time.perf_counter() - self.t0) / (step - self.start - self.WARM)
        left = per * (self.total - step)
        if left < self.WORTH_SAYING:
            return None
        return f"measured {per:.2f} s per update: about {_duration(left)} for the remaining {self.total - step} updates"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


class TrainingLoop:
    """Train to ``config.steps`` with checkpoints every ``save_every`` updates and log rows every ``log_every``."""

    name = "train"  # the progress bar's label
    main = True  # False on the other processes of a torchrun run: they write nothing
    out: Path
    step: int
    log: RunLog
    events: Optional[EventLog]

    def run(self, progress: bool = True) -> None:
        """Train, then ``finish``. A full disk or a permission error ends the run with one line,
        the last checkpoint intact (``checkpoint.disk_errors``). A run that fails before its first
        update is removed (``discard_unstarted_run``): there is nothing in it to resume."""
        try:
            with disk_errors(self.out):
                self._loop(progress)
                if self.main:
                    self.finish(progress)
                if self.events:
                    self.events.close()
        except BaseException:
            if self.step == 0 and self.main:
                if self.events:
                    self.events.close()
                discard_unstarted_run(self.out)
            raise

    def _loop(self, progress: bool) -> None:
        c = self.config
        bar = tqdm(total=c.steps, initial=self.step, disable=not (progress and self.main), desc=self.name, unit="step", dynamic_ncols=True)
        fresh = not has_checkpoint(self.out)
        self.sync()  # every process has looked before the main one writes
        if fresh:
            self.save_checkpoint()  # step 0: something to roll back to
        pending: list[dict] = []  # log rows not written yet
        timer = UpdateTimer(self.step, c.steps)
        while self.step < c.steps:
            try:
                row = self.train_step()
                pending.append(row)
                if self.step % c.save_every == 0 or self.step == c.steps:
                    self.write_log(pending)
                    pending = []
                    self.save_checkpoint()
            except Divergence as e:
                pending = []
                self.roll_back(str(e))
                bar.n = self.step
                bar.refresh()
                continue
            bar.update(1)
            bar.set_postfix(self.postfix(row))
            if self.main and (line := timer.tick(self.step)):
                tqdm.write(line)
            if self.step % c.log_every == 0 and pending:
                self.write_log(pending)
                pending = []
            self.after_step()
        bar.close()

    def write_log(self, rows: list[dict]) -> None:
        """Append rows to log.csv (and to the TensorBoard log with ``--tensorboard``), on the main process."""
        if self.main:
            self.log.append(rows)
            if self.events:
                self.events.rows(rows, *self.event_extras())

    # -- what a trainer may override --------------------------------------------------------
    def event_extras(self) -> tuple:
        """Extra arguments of ``EventLog.rows`` (the Hat EBM trainer adds its rollback count)."""
        return ()

    def sync(self) -> None:
        """Wait for every process (torchrun); nothing for one process."""

    def postfix(self, row: dict) -> dict:
        """The progress bar's numbers for a log row (none by default)."""
        return {}

    def after_step(self) -> None:
        """Per-update extras after the row is logged."""

    def roll_back(self, reason: str) -> None:
        """Trainers without a guard end the run: one line, the last checkpoint intact."""
        raise HatrefineError(f"training diverged at step {self.step + 1}: {reason}; lower the learning rate")

    def finish(self, progress: bool) -> None:
        """The end-of-run figures and report (main process only)."""

    def train_step(self) -> dict:
        raise NotImplementedError

    def save_checkpoint(self) -> None:
        raise NotImplementedError


class LearnsGenerator:
    """Mixed in (before the trainer class) by trainers that also learn their generator
    (``self.generator.module``, optimizer ``self.g_opt``): its weights and optimizer in the checkpoint."""

    def state_tensors(self) -> dict:
        g_opt, self._g_param_groups = optimizer_tensors(self.g_opt, "g_opt")
        return super().state_tensors() | {f"g.{k}": v for k, v in self.generator.module.state_dict().items()} | g_opt

    def checkpoint_meta(self) -> dict:
        return super().checkpoint_meta() | {"g_param_groups": self._g_param_groups}

    def _load_state(self, t: dict, meta: dict) -> None:
        super()._load_state(t, meta)
        load_strict(self.generator.module, subdict(t, "g"), str(self.out))
        load_optimizer(self.g_opt, t, "g_opt", meta["g_param_groups"])
