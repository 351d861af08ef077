"""--tensorboard: the event log holds every logged scalar at its step, once, across a resume and a rollback."""

import csv

import pytest
from click.testing import CliRunner

from hatrefine.cli import main

TINY = [
    "--langevin-steps",
    "2",
    "--batch-size",
    "4",
    "--hat-width",
    "4",
    "--eval-samples",
    "0",
    "--no-calibrate",
    "--quiet",
    "--log-every",
    "2",
    "--save-every",
    "4",
    "--sample-every",
    "4",
]


def read_events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_scalars_and_grids_continue_across_a_resume_without_duplicates(tmp_path, monkeypatch):
    import hatrefine.training.trainer as trainer_module

    real_step = trainer_module.Trainer.train_step

    def crash_at_7(self):
        if self.step == 6:
            raise RuntimeError("crash")
        return real_step(self)

    run = tmp_path / "run"
    monkeypatch.setattr(trainer_module.Trainer, "train_step", crash_at_7)
    first = CliRunner().invoke(main, ["fit", "--out", str(run), "--steps", "10", "--tensorboard", *TINY, "--log-every", "1"])
    assert first.exit_code == 1 and "crash" in first.output, first.output
    assert [e.step for e in read_events(run).Scalars("loss")] == list(range(1, 7))
    # steps 5-6 were logged after the last checkpoint (4): the resumed run logs them again
    monkeypatch.setattr(trainer_module.Trainer, "train_step", real_step)
    resumed = CliRunner().invoke(main, ["fit", "--out", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    acc = read_events(run)
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "energy_data", "energy_samples", "energy_gap", "lr", "eps_y", "eps_z", "residual_norm", "seconds_per_step", "rollbacks"} <= tags
    with open(run / "log.csv") as f:
        log = list(csv.DictReader(f))
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == list(range(1, 11)) == [int(r["step"]) for r in log]  # each step once, in order
    assert [e.value for e in loss] == pytest.approx([float(r["loss"]) for r in log], rel=1e-4)
    gap = acc.Scalars("energy_gap")
    assert gap[-1].value == pytest.approx(abs(float(log[-1]["energy_data"]) - float(log[-1]["energy_samples"])), rel=1e-4)
    assert [e.step for e in acc.Images("samples")] == [4, 8, 10]


def test_a_rollback_purges_the_steps_it_undoes(tmp_path, monkeypatch):
    import hatrefine.training.trainer as trainer_module

    calls = {"n": 0}
    real = trainer_module.Trainer._guard

    def diverge_once(self, loss, grad_norm, y):
        calls["n"] += 1
        if calls["n"] == 7:  # step 7 diverges: back to the checkpoint at 4
            raise trainer_module.Divergence("injected")
        return real(self, loss, grad_norm, y)

    monkeypatch.setattr(trainer_module.Trainer, "_guard", diverge_once)
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", "--out", str(run), "--steps", "8", "--tensorboard", *TINY])
    assert result.exit_code == 0, result.output
    acc = read_events(run)
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 9))
    assert [e.value for e in acc.Scalars("rollbacks")][-1] == 1 and acc.Scalars("rollbacks")[0].value == 0


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    result = CliRunner().invoke(main, ["fit", "--out", str(tmp_path / "run"), "--steps", "2", "--tensorboard", *TINY])
    assert result.exit_code == 1 and "pip install 'hatrefine[tensorboard]'" in result.output, result.output
    assert not (tmp_path / "run").exists()


def test_pretrain_ae_writes_its_loss_and_reconstructions(tmp_path):
    run = tmp_path / "ae"
    result = CliRunner().invoke(main, ["pretrain-ae", "--out", str(run), "--steps", "4", "--width", "4", "--tensorboard", "--quiet"])
    assert result.exit_code == 0, result.output
    acc = read_events(run)
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Images("reconstructions")] == [4]
