"""Distillation: a latent map T that starts as the identity, learns the refined distribution on a
case where it is known, resumes exactly, loads through dir:, and refuses what it cannot distil."""

import errno
import math
import os
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from hatrefine.adapters import wrap
from hatrefine.cli import main
from hatrefine.files.checkpoint import read_state_dict
from hatrefine.networks.latent_map import LatentMap
from hatrefine.networks.registry import load_generator
from hatrefine.sampling.ddls import DDLS
from hatrefine.settings.distill import DistillConfig
from hatrefine.training.distill import DistillTrainer

SCALE, MEAN, STD = 0.2, 0.1, 0.15  # G(z) = 0.2 z; the refined distribution N(0.1, 0.15^2)
TINY_FIT = ["--steps", "2", "--langevin-steps", "2", "--batch-size", "8", "--eval-samples", "0", "--calibration-samples", "20", "--hat-width", "4", "--quiet"]


@pytest.mark.parametrize("shape", [(64,), (1, 8, 8)])
def test_before_training_the_distilled_generator_is_the_generator_bit_for_bit(shape):
    T = LatentMap(shape)
    z = torch.randn(5, *shape)
    assert torch.equal(T(z), z)
    share = sum(p.numel() for p in LatentMap((64,)).parameters()) / sum(p.numel() for p in load_generator("builtin:mnist").parameters())
    assert share < 0.1  # a few percent of the embedded GAN (5.7% at the default width 128)
    G = load_generator("builtin:mnist")
    with torch.no_grad():
        z = G.sample_latent(4)
        assert torch.equal(G(LatentMap(G.latent_shape)(z)), G(z))


class ExactLogRatio(torch.nn.Module):
    def forward(self, x):
        x = x.reshape(len(x))
        return -((x - MEAN) ** 2) / (2 * STD**2) - math.log(STD) + x**2 / (2 * SCALE**2) + math.log(SCALE)


def toy_refiner():
    """A 'run' whose refined samples are known: DDLS with the exact log ratio samples N(0.1, 0.15^2) from x = 0.2 z."""
    G = wrap(torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Unflatten(1, (1, 1, 1))), latent_shape=(1,), image_shape=(1, 1, 1), name="gauss")
    with torch.no_grad():
        G.module[0].weight.fill_(SCALE)
    ddls = DDLS(G, ExactLogRatio(), n_steps=60, eps=0.4)
    return SimpleNamespace(
        generator=G,
        sampler=lambda: ddls.sampler,
        sampling=SimpleNamespace(chosen_by="calibration", temperature=1.0, langevin_steps=60),
        config=SimpleNamespace(data=None),
    )


def moments(G, T, n=4000):
    z = G.sample_latent(n, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        x = G(T(z)).flatten().double()
    return x.mean().item(), x.std().item()


@pytest.mark.parametrize("method", ["regression", "mmd", "energy"])
def test_distillation_moves_the_generator_toward_the_known_refined_distribution(tmp_path, method):
    refiner = toy_refiner()
    trainer = DistillTrainer(
        DistillConfig(run="toy", method=method, steps=400, batch_size=128, lr=1e-2, width=32, eval_samples=0, device="cpu"), tmp_path / method, refiner=refiner
    )
    G = refiner.generator
    chains = refiner.sampler().sample(G.sample_latent(4000, generator=torch.Generator().manual_seed(3)), generator=torch.Generator().manual_seed(4)).x
    target = (chains.mean().item(), chains.std().item())  # the refined distribution the run samples (near N(0.1, 0.15^2))
    assert abs(target[0] - MEAN) < 0.05 and abs(target[1] - STD) < 0.04
    untrained = moments(G, trainer.map)
    trainer.run(progress=False)
    trained = moments(G, trainer.map)
    assert abs(untrained[0] - target[0]) > 0.05  # the untouched generator is far from it
    assert abs(trained[0] - target[0]) < 0.015, (trained, target)  # each learns the move of the mean
    if method == "mmd":  # distribution matching also keeps the spread (regression onto end points shrinks it)
        assert abs(trained[1] - target[1]) < 0.02, (trained, target)


def test_distill_resumes_exactly_and_loads_through_dir(tmp_path):
    run = tmp_path / "run"
    assert CliRunner().invoke(main, ["fit", "--out", str(run), *TINY_FIT]).exit_code == 0
    common = ["distill", "--run", str(run), "--batch-size", "4", "--eval-samples", "0", "--save-every", "2", "--quiet"]
    full = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "full"), "--steps", "4"])
    assert full.exit_code == 0, full.output
    assert CliRunner().invoke(main, [*common, "--out", str(tmp_path / "split"), "--steps", "2"]).exit_code == 0
    resumed = CliRunner().invoke(main, ["distill", "--out", str(tmp_path / "split"), "--resume", "--steps", "4", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    a, b = (read_state_dict(tmp_path / d / "model.safetensors") for d in ("full", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    G = load_generator(f"dir:{tmp_path / 'full'}")
    assert G.latent_shape == (64,) and G.image_shape == (1, 32, 32)
    assert "distilled by `hatrefine distill` from the run" in (tmp_path / "full" / "README.md").read_text().lower()
    out = CliRunner().invoke(main, ["generate", "--generator", f"dir:{tmp_path / 'full'}", "--n", "3", "--out", str(tmp_path / "g.npz")])
    assert out.exit_code == 0, out.output


def test_distill_refuses_a_run_without_calibration_and_a_full_disk_in_one_line(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert CliRunner().invoke(main, ["fit", "--out", str(run), *TINY_FIT, "--no-calibrate"]).exit_code == 0
    result = CliRunner().invoke(main, ["distill", "--run", str(run), "--out", str(tmp_path / "d"), "--steps", "2", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "has no calibration" in result.output and "hatrefine calibrate --run" in result.output
    assert not (tmp_path / "d").exists()
    conditional = tmp_path / "conditional"
    assert CliRunner().invoke(main, ["fit", "--out", str(conditional), *TINY_FIT, "--mode", "conditional"]).exit_code == 0
    result = CliRunner().invoke(main, ["distill", "--run", str(conditional), "--out", str(tmp_path / "d"), "--method", "energy", "--steps", "2", "--quiet"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "needs a run whose chains move Z" in result.output
    assert CliRunner().invoke(main, ["calibrate", "--run", str(run), "--n", "20"]).exit_code == 0
    import hatrefine.files.checkpoint as ckpt

    def full_disk(tensors, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    result = CliRunner().invoke(main, ["distill", "--run", str(run), "--out", str(tmp_path / "d"), "--steps", "2", "--batch-size", "4", "--quiet"])
    assert result.exit_code == 1 and "no space left on the device" in result.output.strip().splitlines()[-1]
