"""py:MODULE:FACTORY: a generator from the user's own code, reachable from the CLI, recorded in the run and reloaded from it."""

import sys

import pytest
import torch

from hatrefine import HatrefineError, HatRefiner, fit, load_generator

FACTORY = """
import torch
from torch import nn
from hatrefine.adapters import wrap

def make(checkpoint=None):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 64), nn.Unflatten(1, (1, 8, 8)), nn.Tanh())
    if checkpoint:
        net.load_state_dict(torch.load(checkpoint, weights_only=True))
    return wrap(net, latent_shape=(4,), image_shape=(1, 8, 8))

def not_wrapped():
    return torch.nn.Linear(4, 4)
"""
BROKEN = 'raise RuntimeError("boom at import")\n'


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(FACTORY)
    (tmp_path / "broken_models.py").write_text(BROKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    sys.modules.pop("my_models", None)
    sys.modules.pop("broken_models", None)


def test_the_factory_builds_the_generator_and_names_it_by_spec(user_code):
    G = load_generator("py:my_models:make")
    assert G.name == "py:my_models:make" and G.image_shape == (1, 8, 8)
    with torch.no_grad():
        G.module[0].weight.mul_(-0.5)  # weights the factory alone does not make
    torch.save(G.module.state_dict(), user_code / "w.pt")
    z = torch.randn(2, 4)
    with torch.no_grad():
        from_file, fresh = load_generator("py:my_models:make", str(user_code / "w.pt"))(z), load_generator("py:my_models:make")(z)
        torch.testing.assert_close(from_file, G(z))  # --checkpoint reaches the factory
        assert not torch.allclose(from_file, fresh)


@pytest.mark.parametrize("spec, message", [
    ("py:my_models", "is not py:MODULE:FACTORY"),
    ("py:no_such_module:make", "cannot import 'no_such_module'"),
    ("py:my_models:missing", "has no function 'missing'"),
    ("py:my_models:not_wrapped", "returned Linear; the factory must return a wrapped generator"),
    ("py:broken_models:make", "py:broken_models:make: importing module 'broken_models' raised RuntimeError: boom at import"),
])  # fmt: skip
def test_bad_specs_are_one_line(user_code, spec, message):
    with pytest.raises(HatrefineError, match=message):
        load_generator(spec)


def test_a_run_records_the_spec_and_reloads_the_generator_from_it(user_code, blobs_8px):
    refiner = fit(
        user_code / "run",
        generator=load_generator("py:my_models:make"),
        data=blobs_8px,
        steps=2,
        batch_size=8,
        langevin_steps=1,
        eval_samples=0,
        calibrate=False,
        device="cpu",
        progress=False,
    )
    reloaded = HatRefiner.from_pretrained(user_code / "run")
    assert reloaded.config.generator == "py:my_models:make"
    z = torch.randn(3, 4)
    torch.testing.assert_close(reloaded.generator(z), refiner.generator(z))


def test_fit_and_sample_from_the_cli_with_a_py_spec_and_its_checkpoint(user_code, blobs_8px):
    import json

    import numpy as np
    from click.testing import CliRunner

    from hatrefine.cli import main

    G = load_generator("py:my_models:make")
    with torch.no_grad():
        G.module[0].weight.mul_(-0.5)
    torch.save(G.module.state_dict(), user_code / "w.pt")
    args = ["fit", "--generator", "py:my_models:make", "--checkpoint", "w.pt", "--data", blobs_8px, "--out", "run", "--steps", "2", "--batch-size", "8",
            "--langevin-steps", "1", "--eval-samples", "0", "--no-calibrate", "--quiet", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((user_code / "run" / "config.json").read_text())["hatrefine"]["generator"] == "py:my_models:make"
    result = CliRunner().invoke(main, ["sample", "--run", "run", "--n", "3", "--langevin-steps", "0", "--out", "s.npz"])
    assert result.exit_code == 0, result.output
    with np.load(user_code / "s.npz") as f, torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(f["g"]), G(torch.from_numpy(f["z"])))  # the checkpoint's weights, reloaded from the run


@pytest.fixture
def blobs_8px(tmp_path):
    import numpy as np

    path = tmp_path / "blobs.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8))
    return str(path)
