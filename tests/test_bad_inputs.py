"""The bad-input catalogue (docs/reliability.md, "When the input is wrong"): one test per entry.

Each: exit code 1, one line that names the problem and the fix, no traceback (unless
--debug), and nothing on disk changed."""

import hashlib
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hatrefine.cli import main
from tests.test_evaluation import stand_in


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A directory with a finished run and every kind of bad file."""
    d = tmp_path_factory.mktemp("bad")
    result = CliRunner().invoke(
        main,
        ["fit", "--out", str(d / "run"), "--steps", "1", "--langevin-steps", "1", "--batch-size", "4", "--hat-width", "4", "--eval-samples", "0", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    np.savez(d / "rgb.npz", x=np.zeros((2, 3, 32, 32), np.float32))
    np.savez(d / "small.npz", x=np.zeros((2, 1, 16, 16), np.float32))
    np.savez(d / "bright.npz", x=np.full((2, 1, 32, 32), 3.0, np.float32))
    np.savez(d / "z10.npz", z=np.zeros((2, 10), np.float32))
    np.savez(d / "wide.npz", x=np.linspace(-2.5, 2.5, 2 * 32 * 32, dtype=np.float32).reshape(2, 1, 32, 32))
    nan = np.zeros((5, 1, 32, 32), np.float32)
    nan[1, 0, 3, 3], nan[3, 0, 0, 0] = np.nan, np.inf
    np.savez(d / "nan.npz", x=nan)
    np.savez(d / "levels.npz", x=np.arange(2 * 32 * 32).reshape(2, 1, 32, 32).astype(np.float32) % 255)
    np.savez(d / "nokeys.npz", pictures=np.zeros((2, 1, 32, 32), np.float32))
    np.savez(d / "empty.npz", x=np.zeros((0, 1, 32, 32), np.float32))
    np.savez(d / "three.npz", x=np.zeros((3, 1, 32, 32), np.float32))
    np.savez(d / "six.npz", x=np.zeros((6, 1, 32, 32), np.float32))
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
    "wrong channel count (refine converts unless --no-resize)": (
        ["refine", "--run", "{d}/run", "--input", "{d}/rgb.npz", "--out", "{d}/o.npz", "--no-resize"],
        ["are 3x32x32 (C x H x W)", "makes 1x32x32", "leave out --no-resize"],
    ),
    "wrong image size (refine converts unless --no-resize)": (
        ["refine", "--run", "{d}/run", "--input", "{d}/small.npz", "--out", "{d}/o.npz", "--no-resize"],
        ["are 1x16x16", "makes 1x32x32", "as fit --data does"],
    ),
    "values outside the declared range": (
        ["refine", "--run", "{d}/run", "--input", "{d}/bright.npz", "--out", "{d}/o.npz"],
        ["[3, 3]", "expects [-1, 1]", "x / 127.5 - 1", "--value-range 0,255"],
    ),
    "values outside [-1, 1], not 8-bit": (
        ["refine", "--run", "{d}/run", "--input", "{d}/wide.npz", "--out", "{d}/o.npz"],
        ["[-2.5, 2.5]", "rescale them to [-1, 1]", "--value-range LOW,HIGH"],
    ),
    "NaN pixels": (
        ["refine", "--run", "{d}/run", "--input", "{d}/nan.npz", "--out", "{d}/o.npz"],
        ["2 NaN or inf values", "in 2 of 5 images", "index 1, 3", "repair or drop"],
    ),
    "NaN pixels in data": (["fit", "--data", "{d}/nan.npz", "--out", "{d}/run", "--overwrite"], ["NaN or inf", "index 1, 3"]),
    "8-bit levels stored as floats in data": (
        ["fit", "--data", "{d}/levels.npz", "--out", "{d}/run", "--overwrite"],
        ["[0, 254]", "8-bit levels", "x / 127.5 - 1", "uint8"],
    ),
    "values outside a declared --value-range": (
        ["eval", "--samples", "{d}/levels.npz", "--value-range", "0,1"],
        ["[0, 254]", "outside the declared --value-range 0,1"],
    ),
    "bad --value-range": (
        ["refine", "--run", "{d}/run", "--input", "{d}/levels.npz", "--out", "{d}/o.npz", "--value-range", "1"],
        ["--value-range '1' is not LOW,HIGH"],
    ),
    "latent-shape mismatch": (["refine", "--run", "{d}/run", "--input", "{d}/z10.npz", "--out", "{d}/o.npz"], ["latent has shape (2, 10)", "expects (N, 64)"]),
    "checkpoint for another architecture": (
        ["generate", "--checkpoint", "{d}/other_arch.pth", "--out", "{d}/o.npz"],
        ["another architecture", "missing fc.0.weight", "(+", "unexpected foo.weight"],
    ),
    "truncated weights file": (
        ["generate", "--checkpoint", "{d}/truncated.safetensors", "--out", "{d}/o.npz"],
        ["truncated or not a weights file", "save it again"],
    ),
    "corrupt npz": (["fit", "--data", "{d}/corrupt.npz", "--out", "{d}/run", "--overwrite"], ["not a readable .npz", "numpy.savez"]),
    "npz without the expected keys": (["eval", "--samples", "{d}/nokeys.npz"], ["lacks ['x']", "write images under 'x'"]),
    "empty sample file": (["eval", "--samples", "{d}/empty.npz"], ["are empty", "(0, 1, 32, 32)", "holds images"]),
    "too few samples for FID": (["eval", "--samples", "{d}/three.npz"], ["3 sample images", "need at least 6"]),
    "too few reference images for FID": (
        ["eval", "--samples", "{d}/six.npz", "--data", "{d}/three.npz"],
        ["reference images in", "need at least 6", "larger set"],
    ),
    "missing weights offline": (["generate", "--generator", "mimicry:sngan_cifar10", "--out", "{d}/o.npz"], ["not cached", "--checkpoint"]),
    "data folder with no images": (["fit", "--data", "{d}/no_images", "--out", "{d}/run", "--overwrite"], ["holds no images", "folder of images"]),
    "conditional mode on a prior-less generator": (
        ["fit", "--generator", "ae:{d}/ae", "--mode", "conditional", "--out", "{d}/run", "--overwrite"],
        ["no latent prior", "--mode joint"],
    ),
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
    monkeypatch.setenv("HATREFINE_CACHE", str(world.parent / "cache"))  # FID reference statistics go elsewhere
    monkeypatch.setattr("hatrefine.evaluation.inception.load_inception", lambda source="auto", device="cpu": stand_in())
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


def test_images_in_unit_range_warn_and_the_flag_maps_them(world, tmp_path):
    """[0, 1] images are the usual convention outside GAN code: refine warns in one line (and
    still runs); --value-range 0,1 maps them onto [-1, 1] without a warning; -1,1 silences it."""
    x = np.random.default_rng(0).uniform(0, 1, (2, 1, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "unit.npz", x=x)
    args = ["refine", "--run", str(world / "run"), "--input", str(tmp_path / "unit.npz"), "--langevin-steps", "0", "--invert-steps", "1"]
    warned = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a.npz")])
    assert warned.exit_code == 0, warned.output
    warning = [line for line in warned.output.splitlines() if line.startswith("Warning:")]
    assert len(warning) == 1 and "all lie in [0, 1]" in warning[0] and "--value-range 0,1" in warning[0], warned.output
    for flag, expected in (("0,1", x * 2 - 1), ("-1,1", x)):
        quiet = CliRunner().invoke(main, [*args, "--out", str(tmp_path / f"{flag}.npz"), "--value-range", flag])
        assert quiet.exit_code == 0 and "Warning" not in quiet.output, quiet.output
        refined = np.load(tmp_path / f"{flag}.npz")["x"]  # K = 0: the input itself, in [-1, 1]
        np.testing.assert_allclose(refined, expected, atol=1e-5)
