"""Recipes: the paper's experiments by name resolve to the authors' values, explicit options win, runs record them."""

import json

import pytest
import torch
from click.testing import CliRunner

from hatrefine import HatrefineError
from hatrefine.cli import main
from hatrefine.settings.autoencoder import AEConfig
from hatrefine.settings.config import FitConfig, SynthesisConfig
from hatrefine.settings.recipes import RECIPES, apply_recipe

# The authors' values, read from their configs (point0bar1/hat-ebm; configs_joint/, configs_synth/, fid/):
# (recipe, command, setting, value)
AUTHORS = [
    ("cifar10-refine", "fit", "lr", 1e-5), ("cifar10-refine", "fit", "steps", 25000), ("cifar10-refine", "fit", "batch_size", 128),
    ("cifar10-refine", "fit", "langevin_steps", 250), ("cifar10-refine", "fit", "langevin_steps_test", 350),
    ("cifar10-refine", "fit", "eps_y", 1e-4), ("cifar10-refine", "fit", "eps_z", 5e-3), ("cifar10-refine", "fit", "temperature", 1e-3),
    ("cifar10-refine", "fit", "data_noise", 1e-3), ("cifar10-refine", "fit", "y_sigma_test", 0.25), ("cifar10-refine", "fit", "init_scale_res", 0.0),
    ("cifar10-refine", "fit", "data", "cifar10"), ("cifar10-refine", "fit", "hat", "sngan32"), ("cifar10-refine", "fit", "ema", 0.0),
    ("celeba64-refine", "fit", "langevin_steps", 100), ("celeba64-refine", "fit", "langevin_steps_test", 125),
    ("celeba64-refine", "fit", "temperature", 1e-6), ("celeba64-refine", "fit", "hat", "sngan64"), ("celeba64-refine", "fit", "data", "celeba"),
    ("cifar10-retrofit", "fit", "lr", 1e-4), ("cifar10-retrofit", "fit", "eps_y", 5e-4), ("cifar10-retrofit", "fit", "eps_z", 1e-3),
    ("cifar10-retrofit", "fit", "langevin_steps", 100), ("cifar10-retrofit", "fit", "langevin_steps_test", 125),
    ("cifar10-retrofit", "fit", "y_sigma", 0.1), ("cifar10-retrofit", "fit", "data_noise", 1e-2), ("cifar10-retrofit", "fit", "init_scale_res", 0.01),
    ("cifar10-retrofit", "pretrain-ae", "latent_shape", [1, 16, 16]), ("cifar10-retrofit", "pretrain-ae", "lr", 1e-4),
    ("cifar10-retrofit", "pretrain-ae", "latent_noise", 0.02), ("cifar10-retrofit", "pretrain-ae", "gen_factor", 2.0),
    ("cifar10-retrofit", "pretrain-ae", "decoder", "resnet"),
    ("cifar10-synth", "synthesize", "steps", 50000), ("cifar10-synth", "synthesize", "langevin_steps", 50), ("cifar10-synth", "synthesize", "langevin_steps_test", 125),
    ("cifar10-synth", "synthesize", "temperature", 1e-8), ("cifar10-synth", "synthesize", "temperature_test", 1e-3), ("cifar10-synth", "synthesize", "eps_y", 5e-4),
    ("cifar10-synth", "synthesize", "bank_size", 10000), ("cifar10-synth", "synthesize", "generator_loss_weight", 1000.0),
    ("cifar10-synth", "synthesize", "gen_factor", 2.0), ("cifar10-synth", "synthesize", "init_scale_res", 0.01),
    ("celeba64-synth", "synthesize", "langevin_steps_test", 100), ("celeba64-synth", "synthesize", "image_shape", "3,64,64"),
    ("imagenet128-synth", "synthesize", "steps", 300000), ("imagenet128-synth", "synthesize", "langevin_steps_test", 150),
    ("imagenet128-synth", "synthesize", "generator_lr", 5e-5), ("imagenet128-synth", "synthesize", "grad_clip", 50.0),
    ("imagenet128-synth", "synthesize", "lr_schedule", "step:230000:260000"),
]  # fmt: skip


@pytest.mark.parametrize("name, command, key, value", AUTHORS)
def test_recipes_hold_the_authors_values(name, command, key, value):
    assert RECIPES[name].settings[command][key] == value


@pytest.mark.parametrize("name", [n for n in RECIPES if "fit" in RECIPES[n].settings])
def test_every_fit_recipe_builds_a_valid_config(name):
    config = FitConfig.from_recipe(name)
    assert config.recipe == name and all(getattr(config, k) == v for k, v in RECIPES[name].settings["fit"].items())


def test_explicit_settings_override_the_recipe():
    config = FitConfig.from_recipe("cifar10-refine", lr=3e-5, data="my.npz")
    assert (config.lr, config.data, config.langevin_steps) == (3e-5, "my.npz", 250)
    settings, recipe = apply_recipe("fit", {"generator": "mimicry:sngan_celeba64", "recipe": None, "lr": 1e-4}, given={"generator", "lr"})
    assert recipe.name == "celeba64-refine" and settings["lr"] == 1e-4 and settings["temperature"] == 1e-6  # chosen by the generator
    assert apply_recipe("fit", {"generator": "builtin:mnist", "recipe": None}, given=set()) == ({"generator": "builtin:mnist", "recipe": None}, None)
    assert SynthesisConfig.from_recipe("celeba64-synth").shape() == (3, 64, 64)


def test_a_recipe_for_another_command_or_unknown_is_one_line():
    with pytest.raises(
        HatrefineError, match="recipe cifar10-synth has no settings for `hatrefine fit`; it runs as `hatrefine synthesize --recipe cifar10-synth`"
    ):
        FitConfig.from_recipe("cifar10-synth")
    with pytest.raises(HatrefineError, match="unknown recipe 'cifar11'"):
        FitConfig(recipe="cifar11")
    with pytest.raises(HatrefineError, match="needs --data"):
        SynthesisConfig.from_recipe("imagenet128-synth")


def _sngan_checkpoint(path):
    from hatrefine.adapters.mimicry import MODELS

    torch.save({"model_state_dict": MODELS["sngan_cifar10"].generator().state_dict(), "optimizer_state_dict": {}, "global_step": 1}, path)


def test_the_mimicry_cifar10_generator_selects_cifar10_never_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _sngan_checkpoint(tmp_path / "netG.pth")
    result = CliRunner().invoke(
        main,
        [
            "fit",
            "--generator",
            "mimicry:sngan_cifar10",
            "--checkpoint",
            str(tmp_path / "netG.pth"),
            "--data-root",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "recipe cifar10-refine (the recipe of mimicry:sngan_cifar10" in result.output and "data cifar10" in result.output
    assert "--data-root" in result.output.splitlines()[-1] and "mnist" not in result.output.splitlines()[-1].lower()
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_generator_without_recipe_or_data_of_another_shape_is_one_line(tmp_path, tiny_generator):
    from hatrefine.training.trainer import fit

    with pytest.raises(HatrefineError, match=r"tiny makes 1x8x8 images and has no recipe; pass --data"):
        fit(tmp_path / "run", generator=tiny_generator, hat="small", steps=1)


def test_the_run_records_the_recipe_and_every_resolved_value(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "pretrain-ae",
            "--recipe",
            "cifar10-retrofit",
            "--data",
            "builtin:mnist",
            "--image-shape",
            "1,32,32",
            "--width",
            "4",
            "--steps",
            "2",
            "--save-every",
            "2",
            "--out",
            str(tmp_path / "ae"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "ae" / "config.json").read_text())["autoencoder"]
    assert saved["recipe"] == "cifar10-retrofit" and saved["lr"] == 1e-4 and saved["batch_size"] == 128 and saved["width"] == 4
    assert AEConfig(**saved).latent_shape == [1, 16, 16]


def test_step_schedule_divides_the_learning_rate_by_ten_at_each_drop():
    config = FitConfig(lr_schedule="step:100:150", steps=200)
    assert [config.lr_factor(s) for s in (0, 99, 100, 149, 150, 199)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    for bad in ("step:", "step:x", "linear", "step:0"):
        with pytest.raises(HatrefineError, match="unknown --lr-schedule"):
            FitConfig(lr_schedule=bad)


def test_runs_saved_before_this_version_load_with_what_they_ran():
    saved = FitConfig().to_dict()
    for key in ("recipe", "y_sigma_test", "init_scale_res", "hat_block"):
        del saved[key]
    config = FitConfig.from_dict(saved)
    assert (config.recipe, config.y_sigma_test, config.init_scale_res, config.hat_block) == (None, None, 0.0, "mimicry")


@pytest.mark.parametrize("name", ["cifar10-refine", "celeba64-refine", "cifar10-retrofit"])
def test_paper_recipes_sample_unclipped_and_train_without_the_guard_as_the_authors(name):
    from hatrefine.models.refiner import HatRefiner
    from hatrefine.networks.hat import create_hat

    c = FitConfig.from_recipe(name, generator="builtin:mnist", hat="small", hat_width=4, data="builtin:mnist")
    assert c.max_rollbacks == 0 and c.max_energy_growth == float("inf")  # no rollback ever changes lr or the steps
    from hatrefine import load_generator

    refiner = HatRefiner(load_generator("builtin:mnist"), create_hat("small", (1, 32, 32), width=4), c)
    assert refiner.sampler(training=True).y_clip == 2.5  # training chains clip, as theirs
    assert refiner.sampler().y_clip is None  # their FID chains ran unclipped
    assert FitConfig().test_clip() == 2.5  # hatrefine's own default keeps the clip at test time
