"""Crash safety: a fit killed with SIGKILL at any moment resumes to the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from hatrefine.files.checkpoint import read_state_dict

ARGS = ["--steps", "24", "--batch-size", "8", "--langevin-steps", "2", "--hat-width", "4", "--save-every", "1", "--log-every", "1",
        "--sample-every", "1000", "--eval-samples", "0", "--no-calibrate", "--device", "cpu", "--quiet"]  # fmt: skip


def fit(out, *extra, wait=True):
    cmd = [sys.executable, "-m", "hatrefine.cli", "fit", "--out", str(out), *ARGS, *extra]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def saved_step(out):
    for name in ("checkpoint", "checkpoint.old"):
        try:
            return json.loads((out / name / "state.json").read_text())["step"]
        except (OSError, ValueError):
            continue
    return -1


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    assert fit(tmp_path / "full").returncode == 0
    out = tmp_path / "killed"
    for kill_after in (2, 9, 17):  # kill while it runs past these checkpoints, at whatever it is doing then
        proc = fit(out, *(["--resume"] if (out / "config.json").exists() else []), wait=False)
        deadline = time.time() + 300
        while saved_step(out) < kill_after and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.05 * kill_after % 0.13)  # land somewhere inside a step or a save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert saved_step(out) < 24, "the run finished before it could be killed; make it longer"
    refused = fit(out)
    assert refused.returncode == 1 and "unfinished run" in refused.stderr and "--resume" in refused.stderr
    done = fit(out, "--resume")
    assert done.returncode == 0, done.stderr
    full = read_state_dict(tmp_path / "full" / "checkpoint" / "state.safetensors")
    killed = read_state_dict(out / "checkpoint" / "state.safetensors")
    assert full.keys() == killed.keys()
    for k in full:
        assert torch.equal(full[k], killed[k]), k
    assert torch.equal(read_state_dict(tmp_path / "full" / "hat.safetensors")["net.0.weight"], read_state_dict(out / "hat.safetensors")["net.0.weight"])
    strip = lambda path: [r.rsplit(",", 1)[0] for r in path.read_text().splitlines()]  # all but the seconds column
    assert strip(out / "log.csv") == strip(tmp_path / "full" / "log.csv")
