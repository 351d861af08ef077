"""Run directories: one writer at a time, validated run files, and a full disk that loses nothing."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from hatrefine.cli import main

TINY = ["--langevin-steps", "2", "--batch-size", "4", "--hat-width", "4", "--eval-samples", "0", "--no-calibrate", "--quiet"]


def fit_process(out, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "hatrefine.cli", "fit", "--out", str(out), *TINY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, seconds=120.0):
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def logged_steps(out):
    with open(out / "log.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_run(tmp_path):
    out = tmp_path / "run"
    first = fit_process(out, "--steps", "150", "--log-every", "5", "--save-every", "10")
    wait_for(lambda: (out / "log.csv").is_file() or first.poll() is not None)
    second = subprocess.run([sys.executable, "-m", "hatrefine.cli", "fit", "--out", str(out), "--resume"], capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first fit ended before the second tried; lengthen it"
    assert second.returncode != 0
    assert second.stderr.strip().count("\n") == 0 and f"{out} is in use by process {first.pid}" in second.stderr, second.stderr
    assert first.wait(timeout=600) == 0, first.stderr
    assert logged_steps(out) == list(range(1, 151))  # each step once

    # SIGKILL the holder mid-fit: the operating system drops the lock, --resume takes it and finishes
    killed = tmp_path / "killed"
    holder = fit_process(killed, "--steps", "2000", "--save-every", "10")
    wait_for(lambda: (killed / "checkpoint" / "state.json").is_file() and json.loads((killed / "checkpoint" / "state.json").read_text())["step"] > 0)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "hatrefine.cli", "fit", "--out", str(killed), "--resume", "--steps", "40"], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    assert logged_steps(killed) == list(range(1, 41))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("files") / "run"
    result = CliRunner().invoke(main, ["fit", "--out", str(out), "--steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    (out.parent / "fit_output.txt").write_text(result.output)
    return out


def test_done_lists_what_the_run_holds(run):
    """--eval-samples 0 writes no before/after figures, so the closing line does not list them."""
    done = (run.parent / "fit_output.txt").read_text().strip().splitlines()[-1]
    assert done.startswith(f"done: {run} (") and "hat.safetensors" in done and "samples/" in done and "config.json" in done
    assert "before_after.png" not in done and "langevin_path.png" not in done and ".lock" not in done


def edited(path, change):
    original = path.read_text()
    d = json.loads(original)
    change(d)
    path.write_text(json.dumps(d))
    return original


@pytest.mark.parametrize(
    "file, change, words",
    [
        ("config.json", lambda d: d["hatrefine"].update(generator=5, steps="x"), ["config.json: field 'generator' is 5; expected a str"]),
        ("config.json", lambda d: d["hatrefine"].pop("lr"), ["config.json: field 'lr' is missing", "default 0.0001"]),
        ("config.json", lambda d: d["hatrefine"].update(colour="red"), ["config.json: unknown field 'colour'", "remove it"]),
        ("config.json", lambda d: d.update(format_version=99), ["config.json: format_version 99 is newer", "upgrade hatrefine"]),
        ("config.json", lambda d: d["hatrefine"].update(steps=-3), ["config.json: --steps must be positive"]),
        ("sampling.json", lambda d: d.update(temperature="cold"), ["sampling.json: field 'temperature' is 'cold'"]),
        ("quality.json", lambda d: d.update(line=3), ["quality.json: field 'line' is 3; expected a str"]),
    ],
)
def test_a_run_file_edited_by_hand_is_named_with_its_field(run, file, change, words):
    path = run / file
    if file == "quality.json" and not path.exists():
        path.write_text(json.dumps({"format_version": 1, "line": "ok"}))
    original = edited(path, change)
    try:
        command = (
            ["push", "--run", str(run), "--repo", "me/x"]
            if file == "quality.json"
            else ["sample", "--run", str(run), "--n", "2", "--out", str(run.parent / "s.npz"), "--overwrite"]
        )
        result = CliRunner().invoke(main, command)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
        for w in words:
            assert w in lines[0], lines[0]
    finally:
        path.write_text(original)


def test_checkpoint_metadata_is_validated(run):
    path = run / "checkpoint" / "state.json"
    original = edited(path, lambda d: d.update(step="two"))
    try:
        result = CliRunner().invoke(main, ["fit", "--out", str(run), "--resume", "--steps", "3"])
        assert result.exit_code == 1 and "state.json: field 'step' is 'two'; expected a int" in result.output, result.output
    finally:
        path.write_text(original)


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "no space left on the device"), (errno.EACCES, "permission denied")])
def test_a_failed_save_keeps_the_last_checkpoint_and_resume_continues(tmp_path, monkeypatch, code, cause):
    import hatrefine.files.checkpoint as ckpt

    out, real_save, calls = tmp_path / "run", ckpt.save_file, []

    def failing_save(tensors, path):
        calls.append(path)
        if len(calls) == 5:  # state then hat.safetensors at steps 0 and 5; the checkpoint at step 10 fails half-way
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError(code, os.strerror(code), path)
        real_save(tensors, path)

    monkeypatch.setattr(ckpt, "save_file", failing_save)
    result = CliRunner().invoke(main, ["fit", "--out", str(out), "--steps", "15", "--save-every", "5", "--log-every", "5", *TINY])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 2, result.output  # the "fitting ..." line, then the error
    assert (
        lines[-1].startswith(f"Error: cannot write to {out}")
        and cause in lines[-1]
        and "the last checkpoint (step 5) is intact" in lines[-1]
        and "--resume" in lines[-1]
    ), lines[-1]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 5
    assert not (out / "checkpoint.tmp").exists()

    monkeypatch.setattr(ckpt, "save_file", real_save)  # the disk has room again
    resumed = CliRunner().invoke(main, ["fit", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert logged_steps(out) == list(range(1, 16))


def test_a_generator_directory_edited_by_hand_is_named(tmp_path):
    from hatrefine import HatrefineError
    from hatrefine.adapters.hub import load_generator_dir, save_generator_dir
    from hatrefine.networks.registry import create_architecture

    save_generator_dir(tmp_path, create_architecture("dcgan_generator", nz=8, width=4), "dcgan_generator", {"nz": 8, "width": 4}, (8,), (1, 32, 32))
    assert load_generator_dir(tmp_path).latent_shape == (8,)
    edited(tmp_path / "config.json", lambda d: d["generator"].update(latent_shape="8"))
    with pytest.raises(HatrefineError, match=r"config.json \(generator\): field 'latent_shape' is '8'; expected a list"):
        load_generator_dir(tmp_path)


def test_sample_and_refine_show_progress(run, tmp_path):
    sampled = CliRunner().invoke(main, ["sample", "--run", str(run), "--n", "6", "--batch-size", "3", "--out", str(tmp_path / "s.npz")])
    assert sampled.exit_code == 0 and "sample: 100%" in sampled.output and "6/6" in sampled.output, sampled.output
    refined = CliRunner().invoke(main, ["refine", "--run", str(run), "--input", str(tmp_path / "s.npz"), "--out", str(tmp_path / "r.npz"), "--batch-size", "3"])
    assert refined.exit_code == 0 and "refine: 100%" in refined.output and "2/2" in refined.output, refined.output
