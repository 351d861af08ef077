"""The colour embedded default, builtin:twemoji, end to end at tiny size: generate, fit, sample, calibrate."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import hatrefine
from hatrefine import HatrefineError, load_discriminator, load_generator
from hatrefine.cli import main


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_builtin_twemoji_generates_fits_samples_and_calibrates(tmp_path):
    run("generate", "--generator", "builtin:twemoji", "--n", 6, "--out", tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as f:
        assert f["x"].shape == (6, 3, 32, 32) and f["z"].shape == (6, 128)
    out = tmp_path / "run"
    tiny = ["--steps", 2, "--batch-size", 4, "--langevin-steps", 2, "--eval-samples", 12, "--calibration-samples", 10, "--quiet"]
    fitted = run("fit", "--generator", "builtin:twemoji", "--out", out, *tiny)
    first = fitted.output.splitlines()[0]
    assert "with builtin:twemoji" in first and "hat discriminator" in first  # its own data and its own discriminator, by default
    assert "calibration in emoji features" in fitted.output and "emoji-classifier features" in fitted.output
    quality = json.loads((out / "quality.json").read_text())
    assert quality["metric"] == "frechet_distance_emoji" and quality["calibration"]["metric"] == "emoji"
    run("sample", "--run", out, "--n", 3, "--out", tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (3, 3, 32, 32)


def test_the_shipped_colour_gan_loads_as_mimicry_at_its_width_and_a_wrong_width_is_one_line():
    assets = Path(hatrefine.__file__).parent / "assets" / "twemoji_sngan"
    G, D = load_generator("builtin:twemoji"), load_discriminator("builtin:twemoji")
    G64 = load_generator("mimicry:sngan_cifar10[ngf=64]", str(assets / "netG.pth"))
    D32 = load_discriminator("mimicry:sngan_cifar10[ndf=32]", str(assets / "netD.pth"))
    z = G.sample_latent(4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = G(z)
        assert x.shape == (4, 3, 32, 32) and x.std() > 0.1
        torch.testing.assert_close(G64(z), x, rtol=0, atol=0)
        torch.testing.assert_close(D32(x), D(x), rtol=0, atol=0)
    with pytest.raises(HatrefineError, match=r"has ngf 64, not 256; pass \[ngf=64\]"):
        load_generator("mimicry:sngan_cifar10[ngf=256]", str(assets / "netG.pth"))
