"""One way to save and load: a saved model is self-contained (its local generator directory and
weights files travel with it) and reloads from anywhere, whatever path it was loaded by."""

import json
import shutil

import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from hatrefine import HatRefiner
from hatrefine.cli import main
from hatrefine.files.names import GENERATOR_DIR
from hatrefine.models.runs import load_run
from hatrefine.networks.registry import load_generator

TINY = ["--steps", "1", "--langevin-steps", "1", "--batch-size", "4", "--hat-width", "4", "--eval-samples", "0", "--quiet"]


def _run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_a_synthesis_run_loaded_by_a_relative_path_saves_a_self_contained_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run("synthesize", "--out", "syn", *TINY, "--bank-size", "8", "--generator-width", "8", "--no-calibrate")
    model = HatRefiner.from_pretrained("syn")  # relative
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["hatrefine"]["generator"] == f"dir:{GENERATOR_DIR}"
    assert (tmp_path / "saved" / GENERATOR_DIR / "model.safetensors").is_file()
    expected = model.sample(3, seed=2).x
    shutil.rmtree(tmp_path / "syn")  # the original run is gone
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    assert torch.equal(HatRefiner.from_pretrained(tmp_path / "saved").sample(3, seed=2).x, expected)


def test_a_local_generator_weights_file_travels_with_the_saved_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = load_file(str(_asset("model.safetensors")))
    weights = {k: v * 0.9 if v.is_floating_point() else v for k, v in weights.items()}  # weights only this file holds
    save_file(weights, "mine.safetensors")
    _run("fit", "--out", "run", "--checkpoint", "mine.safetensors", *TINY, "--no-calibrate")
    model = load_run("run")
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["hatrefine"]
    assert saved["checkpoint"] == "generator_weights.safetensors" and (tmp_path / "saved" / "generator_weights.safetensors").is_file()
    (tmp_path / "mine.safetensors").unlink()
    again = load_run(tmp_path / "saved")
    z = torch.randn(2, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.generator(z), model.generator(z))
        assert not torch.allclose(again.generator(z), load_generator("builtin:mnist")(z))


def _asset(name):
    from hatrefine.adapters.builtin import asset_dir

    return asset_dir("mnist") / name
