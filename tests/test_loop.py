"""The shared training loop (hatrefine.training.loop): checkpoints, log rows, roll-back and finish, on a toy trainer."""

from types import SimpleNamespace

import pytest

from hatrefine.errors import HatrefineError
from hatrefine.files.checkpoint import RunLog
from hatrefine.training.loop import Divergence, TrainingLoop


class Toy(TrainingLoop):
    """Counts up; step ``fail_at`` diverges once; a checkpoint is the step it was taken at."""

    def __init__(self, out, steps=10, fail_at=None, rolls_back=True):
        self.out, self.config = out, SimpleNamespace(steps=steps, save_every=4, log_every=2)
        self.step, self.log, self.events = 0, RunLog(out / "log.csv", ["step", "value"]), None
        self.fail_at, self.rolls_back = fail_at, rolls_back
        self.saved, self.rolled, self.finished = [], [], False

    def train_step(self):
        if self.step + 1 == self.fail_at:
            self.fail_at = None
            raise Divergence("toy blow-up")
        self.step += 1
        return {"step": self.step, "value": float(self.step)}

    def save_checkpoint(self):
        self.saved.append(self.step)
        (self.out / "checkpoint").mkdir(exist_ok=True)
        (self.out / "checkpoint" / "meta.json").write_text("{}")

    def roll_back(self, reason):
        if not self.rolls_back:
            return super().roll_back(reason)
        self.rolled.append(reason)
        self.step = self.saved[-1]
        self.log.truncate(self.saved[-1])

    def finish(self, progress):
        self.finished = True


def logged_steps(out):
    return [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]]


def test_checkpoints_and_log_rows(tmp_path):
    toy = Toy(tmp_path)
    toy.run(progress=False)
    assert toy.saved == [0, 4, 8, 10]  # step 0, every save_every, the last
    assert logged_steps(tmp_path) == list(range(1, 11)) and toy.finished


def test_divergence_rolls_back_and_repeats_the_lost_steps(tmp_path):
    toy = Toy(tmp_path, fail_at=7)
    toy.run(progress=False)
    assert toy.rolled == ["toy blow-up"]
    assert toy.saved == [0, 4, 8, 10]  # steps 5-6 were done again from the step-4 checkpoint
    assert logged_steps(tmp_path) == list(range(1, 11))  # no row lost or doubled


def test_a_trainer_without_a_guard_ends_with_one_line(tmp_path):
    toy = Toy(tmp_path, fail_at=3, rolls_back=False)
    with pytest.raises(HatrefineError, match="diverged at step 3: toy blow-up"):
        toy.run(progress=False)
    assert toy.saved == [0] and not toy.finished


def test_the_cost_of_an_update_is_said_once_after_a_few_updates(monkeypatch):
    import hatrefine.training.loop as loop

    clock = iter([10.0, 16.0, 0.0, 0.0])  # the clock starts after the first update; three more take 6 s
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    timer = loop.UpdateTimer(start=0, total=1000)
    lines = [timer.tick(step) for step in range(1, 10)]
    said = [line for line in lines if line]
    assert said == ["measured 2.00 s per update: about 33 min for the remaining 996 updates"]
    assert lines.index(said[0]) == 3  # after update 4
    assert loop.UpdateTimer(0, 2).tick(1) is None and loop.UpdateTimer(0, 2).tick(2) is None  # too short to say
    quick, clock = loop.UpdateTimer(0, 20), iter([0.0, 0.3])
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    assert not any(quick.tick(step) for step in range(1, 6))  # 0.1 s an update: a minute is not reached
