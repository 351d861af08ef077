"""One way to resolve settings: the CLI and the Python API make the same run; recipes, paths and
generator-derived defaults are settled once, and trainers do not change the settings they are given."""

import dataclasses
import json
from pathlib import Path

import torch
from click.testing import CliRunner

from hatrefine import fit
from hatrefine.cli import main
from hatrefine.files.checkpoint import read_state_dict
from hatrefine.settings.config import FitConfig
from hatrefine.training.resolve import default_run_dir, resolve, resolve_config
from hatrefine.training.trainer import Trainer

TINY = {"steps": 1, "langevin_steps": 1, "batch_size": 4, "hat_width": 4, "eval_samples": 0, "calibrate": False}
DATA = Path(__file__).parent / "data"


def _settings(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["hatrefine"]


def test_python_fit_and_the_cli_resolve_the_same_run(tmp_path):
    args = ["fit", "--out", str(tmp_path / "cli"), "--quiet", "--steps", "1", "--langevin-steps", "1", "--batch-size", "4", "--hat-width", "4"]
    result = CliRunner().invoke(main, [*args, "--eval-samples", "0", "--no-calibrate"])
    assert result.exit_code == 0, result.output
    fit(out=tmp_path / "py", progress=False, **TINY)
    cli, py = _settings(tmp_path / "cli"), _settings(tmp_path / "py")
    assert cli == py
    assert cli["data"] == "builtin:mnist" and cli["hat"] is None  # settled from the generator and the width, not left for later


def test_a_generator_spec_selects_its_recipe_in_python_too_and_paths_become_absolute(tmp_path, monkeypatch):
    t = read_state_dict(DATA / "mimicry_tiny_sngan32.safetensors")
    torch.save({"model_state_dict": {k[2:]: v for k, v in t.items() if k.startswith("G.")}}, tmp_path / "netG.pth")
    monkeypatch.chdir(tmp_path)
    resolved = resolve(FitConfig, {"generator": "mimicry:sngan_cifar10", "checkpoint": "netG.pth", "data": "mine.npz"})
    c = resolved.config
    assert resolved.recipe.name == "cifar10-refine" and c.recipe == "cifar10-refine"
    assert (c.lr, c.langevin_steps, c.hat, c.data) == (1e-5, 250, "sngan32", "mine.npz")  # the recipe's values, the given data
    assert c.checkpoint == str(tmp_path / "netG.pth")
    assert resolved.generator.image_shape == (3, 32, 32)
    assert default_run_dir(FitConfig, {"generator": "mimicry:sngan_cifar10"}, set(), "joint") == "runs/cifar10-refine"
    assert default_run_dir(FitConfig, {"generator": "builtin:twemoji"}, set(), "joint") == "runs/twemoji-joint"
    assert default_run_dir(FitConfig, {}, set(), "joint") == "runs/mnist-joint"


def test_trainers_leave_the_settings_they_are_given_unchanged(tmp_path):
    config = FitConfig(**TINY)
    before = dataclasses.asdict(config)
    trainer = Trainer(config, tmp_path / "run")
    assert dataclasses.asdict(config) == before  # the trainer resolved a copy
    assert trainer.config.data == "builtin:mnist" and config.data is None
    again = resolve_config(trainer.config, trainer.generator)
    assert again.config == trainer.config  # resolving resolved settings changes nothing


def test_settings_are_checked_as_given_before_defaults_are_settled():
    import pytest

    from hatrefine import HatrefineError

    with pytest.raises(HatrefineError, match="--discriminator only applies to --hat discriminator"):
        resolve(FitConfig, {"discriminator": "builtin:mnist"})  # hat auto would become the discriminator only afterwards
    assert resolve(FitConfig, {}).config.hat == "discriminator"


def test_a_colour_fit_without_a_recipe_gets_a_hat_sized_for_a_cpu_and_recipes_keep_the_papers(tmp_path):
    from hatrefine.models.refiner import build_hat

    t = read_state_dict(DATA / "mimicry_tiny_sngan32.safetensors")
    torch.save({"model_state_dict": {k[2:]: v for k, v in t.items() if k.startswith("G.")}}, tmp_path / "netG.pth")
    from hatrefine.adapters import wrap

    spec = {"generator": "mimicry:sngan_cifar10", "checkpoint": str(tmp_path / "netG.pth"), "data": "mine.npz"}
    decoder = torch.nn.Sequential(torch.nn.Linear(8, 3 * 32 * 32), torch.nn.Unflatten(1, (3, 32, 32)), torch.nn.Tanh())
    mine = resolve(FitConfig, {"data": "mine.npz"}, generator=wrap(decoder, latent_shape=(8,), image_shape=(3, 32, 32), name="mine"))
    assert mine.recipe is None and (mine.config.hat, mine.config.hat_width) == (None, 64)  # sngan32 by image size, width 64
    paper = resolve(FitConfig, spec)
    assert paper.config.recipe == "cifar10-refine" and paper.config.hat_width is None
    widths = {name: build_hat(r.config, r.generator) for name, r in (("mine", mine), ("paper", paper))}
    assert sum(p.numel() for p in widths["paper"].parameters()) > 10 * sum(
        p.numel() for p in widths["mine"].parameters()
    )  # 256 wide: a saved run's None still means the paper's
