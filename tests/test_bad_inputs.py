"""The bad-input catalogue (README, "When the input is wrong"): one test per entry.

Each: exit code 1, one line that names the problem and the fix, no traceback (unless
--debug), and nothing on disk changed."""

import hashlib
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hatrefine.cli import main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A directory with a finished run and every kind of bad file."""
    d = tmp_path_factory.mktemp("bad")
    result = CliRunner().invoke(main, ["fit", "--out", str(d / "run"), "--steps", "1", "--langevin-steps", "1", "--batch-size", "4", "--hat-width", "4", "--eval-samples", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    np.savez(d / "rgb.npz", x=np.zeros((2, 3, 32, 32), np.float32))
    np.savez(d / "small.npz", x=np.zeros((2, 1, 16, 16), np.float32))
    np.savez(d / "bright.npz", x=np.full((2, 1, 32, 32), 3.0, np.float32))
    np.savez(d / "z10.npz", z=np.zeros((2, 10), np.float32))
    np.savez(d / "nokeys.npz", pictures=np.zeros((2, 1, 32, 32), np.float32))
    torch.save({"foo.weight": torch.zeros(3)}, d / "other_arch.pth")
    full = (d / "run" / "hat.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(full[: len(full) // 2])
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (d / "no_images").mkdir()
    (d / "no_images" / "notes.txt").write_text("no pictures here")
    return d


def snapshot(d):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


CATALOGUE = {
    "wrong channel count": (["refine", "--run", "{d}/run", "--input", "{d}/rgb.npz", "--out", "{d}/o.npz"], ["3 channels", "works on 1"]),
    "wrong image size": (["refine", "--run", "{d}/run", "--input", "{d}/small.npz", "--out", "{d}/o.npz"], ["16x16", "32x32", "resize"]),
    "values outside the declared range": (["refine", "--run", "{d}/run", "--input", "{d}/bright.npz", "--out", "{d}/o.npz"], ["[3, 3]", "expected [-1, 1]", "rescale"]),
    "latent-shape mismatch": (["refine", "--run", "{d}/run", "--input", "{d}/z10.npz", "--out", "{d}/o.npz"], ["latent has shape (2, 10)", "expects (N, 64)"]),
    "checkpoint for another architecture": (["generate", "--checkpoint", "{d}/other_arch.pth", "--out", "{d}/o.npz"], ["another architecture", "missing fc.0.weight", "(+", "unexpected foo.weight"]),
    "truncated weights file": (["generate", "--checkpoint", "{d}/truncated.safetensors", "--out", "{d}/o.npz"], ["truncated or not a weights file", "save it again"]),
    "corrupt npz": (["fit", "--data", "{d}/corrupt.npz", "--out", "{d}/run", "--overwrite"], ["not a readable .npz", "numpy.savez"]),
    "npz without the expected keys": (["eval", "--samples", "{d}/nokeys.npz"], ["lacks ['x']", "write images under 'x'"]),
    "missing weights offline": (["generate", "--generator", "mimicry:sngan_cifar10", "--out", "{d}/o.npz"], ["not cached", "--checkpoint"]),
    "data folder with no images": (["fit", "--data", "{d}/no_images", "--out", "{d}/run", "--overwrite"], ["holds no images", "folder of images"]),
    "conditional mode on a prior-less generator": (["fit", "--generator", "ae:{d}/ae", "--mode", "conditional", "--out", "{d}/run", "--overwrite"], ["no latent prior", "--mode joint"]),
    "zero size": (["generate", "--n", "0", "--out", "{d}/o.npz"], ["must be positive", "0"]),
    "negative size": (["fit", "--batch-size", "-4", "--out", "{d}/run", "--overwrite"], ["--batch-size must be positive", "-4"]),
    "existing output": (["fit", "--out", "{d}/run"], ["already holds files", "--overwrite"]),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_bad_input(case, world, monkeypatch):
    args, fragments = CATALOGUE[case]
    if case == "conditional mode on a prior-less generator" and not (world / "ae").exists():
        assert CliRunner().invoke(main, ["pretrain-ae", "--out", str(world / "ae"), "--steps", "1", "--width", "4", "--quiet"]).exit_code == 0
    monkeypatch.setenv("HATREFINE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(world / "torch_home"))  # an empty hub cache
    before = snapshot(world)
    result = CliRunner().invoke(main, [a.format(d=world) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in lines[0], lines[0]
    assert snapshot(world) == before, "something on disk changed"


def test_debug_shows_the_traceback(world):
    result = CliRunner().invoke(main, ["--debug", "generate", "--checkpoint", str(world / "other_arch.pth"), "--out", str(world / "o.npz")])
    assert result.exit_code != 0 and "another architecture" in str(result.exception) + result.output
    assert not os.path.exists(world / "o.npz")
