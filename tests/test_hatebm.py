"""hatebm:NAME, the authors' released models: conversion parity with TensorFlow, the cached run,
the release download, and the one-line errors. Fixtures: tests/data/hatebm/ (make_hatebm_fixtures.py)."""

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hatrefine import HatrefineError, HatRefiner, load_generator
from hatrefine.adapters import hatebm
from hatrefine.cli import main
from hatrefine.files.npz import read_npz
from hatrefine.settings.recipes import RECIPES, apply_recipe

DATA = Path(__file__).parent / "data" / "hatebm"
# name -> (fixture folder, the fixture generator's gen_factor); synthesis shares the refine architectures
FIXTURE = {
    "cifar10_refine": ("cifar10_refine", 1.0),
    "celeba64_refine": ("celeb_a_refine", 1.0),
    "cifar10_retrofit": ("cifar10_retrofit", 2.0),
    "cifar10_synth": ("cifar10_refine", 1.0),
    "celeba64_synth": ("celeb_a_refine", 1.0),
    "imagenet128_synth": ("imagenet_synth", 2.0),
}


def inputs(shape, seed):  # as make_hatebm_fixtures.inputs
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def variables(record, net):
    return {k[len(net) + 1 : -len(hatebm.VARIABLE)]: record[k] for k in record.files if k.startswith(f"{net}/")}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HATREFINE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "hatebm"


def convert(name, cache):
    """The converted run from the fixture's variables (what the TensorFlow read gives; checked below)."""
    record = np.load(DATA / FIXTURE[name][0] / "tf.npz")
    return hatebm.write_run(name, variables(record, "gen"), variables(record, "ebm"), cache / name)


def assert_matches_tensorflow(refiner, name):
    folder, factor = FIXTURE[name]
    record, model = np.load(DATA / folder / "tf.npz"), hatebm.MODELS[name]
    n, s = len(record["energy"]), model.size
    x = torch.from_numpy(inputs((n, s, s, 3), 0)).permute(0, 3, 1, 2)
    z = torch.from_numpy(inputs((n, 8) if model.generator == "sngan" else (n, 16, 16, 1), 1))
    z = z.permute(0, 3, 1, 2) if z.ndim == 4 else z
    with torch.no_grad():
        energy, image = refiner.hat(x).numpy(), refiner.generator(z).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(energy, record["energy"], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(image, record["image"] * model.gen_factor / factor, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(hatebm.MODELS))
def test_converted_models_give_tensorflows_numbers_and_the_recipes_settings(name, cache):
    convert(name, cache)
    refiner = HatRefiner.from_pretrained(f"hatebm:{name}", device="cpu")
    assert_matches_tensorflow(refiner, name)
    model = hatebm.MODELS[name]
    recipe = RECIPES[model.recipe].settings["synthesize" if model.synthesis else "fit"]
    s, c = refiner.sampling, refiner.config
    assert (s.langevin_steps, s.temperature, s.eps_y) == (recipe["langevin_steps_test"], recipe.get("temperature_test", recipe["temperature"]), recipe["eps_y"])
    assert (c.mode, c.init_scale_res, c.y_sigma_test, c.hat_block) == (
        recipe.get("mode", "conditional"),
        recipe["init_scale_res"],
        recipe.get("y_sigma_test"),
        "authors",
    )
    assert load_generator(f"hatebm:{name}").name == f"hatebm:{name}"


def test_sample_command_runs_a_converted_model_with_the_recipes_settings(cache, tmp_path):
    convert("cifar10_refine", cache)
    out = tmp_path / "s.npz"
    r = CliRunner().invoke(main, ["sample", "--run", "hatebm:cifar10_refine", "--n", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    arrays = read_npz(out, optional=("x", "z", "y", "g"))
    assert arrays["x"].shape == (3, 3, 32, 32) and arrays["z"].shape == (3, 8)
    assert not torch.equal(arrays["x"], arrays["g"])  # K = 350 steps moved the residual
    same = HatRefiner.from_pretrained("hatebm:cifar10_refine").sample(3, seed=0)
    torch.testing.assert_close(arrays["x"], same.x)


def test_a_hatebm_generator_selects_its_recipe_in_fit():
    settings, recipe = apply_recipe("fit", {"generator": "hatebm:cifar10_refine", "recipe": None}, {"generator"})
    assert recipe.name == "cifar10-refine" and settings["generator"] == "hatebm:cifar10_refine" and settings["langevin_steps_test"] == 350


def test_offline_without_the_files_names_the_release_page_and_checkpoint(cache):
    with pytest.raises(
        HatrefineError, match=r"downloads are off; download cifar10_refine from https://github.com/point0bar1/hat-ebm/releases and pass --checkpoint DIR"
    ):
        HatRefiner.from_pretrained("hatebm:cifar10_refine")
    r = CliRunner().invoke(main, ["sample", "--run", "hatebm:cifar10_refine", "--out", "never.npz"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "--checkpoint DIR" in r.output


def test_without_tensorflow_the_error_says_how_to_install_it(cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow raises ImportError
    with pytest.raises(HatrefineError, match=r"needs TensorFlow .*pip install 'hatrefine\[tf\]'"):
        HatRefiner.from_pretrained("hatebm:cifar10_refine", checkpoint=str(DATA))


def test_bad_names_and_folders_are_one_line_errors(cache, tmp_path):
    with pytest.raises(HatrefineError, match="unknown model hatebm:cifar100_refine; use one of cifar10_refine"):
        HatRefiner.from_pretrained("hatebm:cifar100_refine")
    with pytest.raises(HatrefineError, match=r"holds no cifar10_synth/gen.ckpt.index; pass the release folder"):
        HatRefiner.from_pretrained("hatebm:cifar10_synth", checkpoint=str(tmp_path))
    gen64, hat32 = variables(np.load(DATA / "celeb_a_refine" / "tf.npz"), "gen"), variables(np.load(DATA / "cifar10_refine" / "tf.npz"), "ebm")
    with pytest.raises(HatrefineError, match="has no single conv_5/kernel variable"):  # a 64x64 generator for a 32x32 model
        hatebm.write_run("cifar10_refine", gen64, hat32, cache / "x")


def test_download_takes_the_release_asset_once(cache, tmp_path, monkeypatch):
    archive = tmp_path / "pretrained_nets.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (DATA / "cifar10_refine").glob("*.ckpt.*"):
            z.write(f, f"pretrained_nets/cifar10_refine/{f.name}")
    listing = tmp_path / "releases.json"
    listing.write_text(json.dumps([{"tag_name": "v1", "assets": [{"name": archive.name, "browser_download_url": archive.as_uri()}]}]))
    monkeypatch.setattr(hatebm, "RELEASES_API", listing.as_uri())
    monkeypatch.setenv("HATREFINE_OFFLINE", "0")
    folder = hatebm.release_folder("cifar10_refine")
    assert folder == cache / "release" / "pretrained_nets" / "cifar10_refine" and (folder / "ebm.ckpt.index").is_file()
    archive.unlink()  # a second use reads the cache
    assert hatebm.release_folder("cifar10_refine") == folder
    releases = [{"assets": [{"name": "cifar10_refine.zip"}, {"name": "cifar10_synth.tar.gz"}]}]
    assert hatebm._asset(releases, hatebm.MODELS["cifar10_synth"])["name"] == "cifar10_synth.tar.gz"
    with pytest.raises(
        HatrefineError, match=r"no release asset of point0bar1/hat-ebm holds celeb_a_refine \(assets: cifar10_refine.zip, cifar10_synth.tar.gz\)"
    ):
        hatebm._asset(releases, hatebm.MODELS["celeba64_refine"])


# -- with TensorFlow: the checkpoints themselves ---------------------------------------------
@pytest.mark.parametrize("folder", sorted({f for f, _ in FIXTURE.values()}))
def test_tensorflow_read_gives_the_fixture_variables(folder):
    pytest.importorskip("tensorflow")
    record = np.load(DATA / folder / "tf.npz")
    for net in ("gen", "ebm"):
        read = hatebm.read_checkpoint(DATA / folder / f"{net}.ckpt")
        expected = variables(record, net)
        assert sorted(read) == sorted(expected)
        assert all(np.array_equal(read[k], expected[k]) for k in read)


@pytest.mark.parametrize("name", ["cifar10_refine", "celeba64_refine", "cifar10_retrofit", "imagenet128_synth"])
def test_checkpoint_folder_converts_to_tensorflows_numbers(name, cache):
    pytest.importorskip("tensorflow")
    refiner = HatRefiner.from_pretrained(f"hatebm:{name}", device="cpu", checkpoint=str(DATA))
    assert_matches_tensorflow(refiner, name)
    assert json.loads((cache / name / "config.json").read_text())["source"]["read_from"] == str(DATA / FIXTURE[name][0])
