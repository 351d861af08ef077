"""Sharing on the Hub, tested offline: push (with the upload replaced by a local copy) and
loading ``hf:ORG/NAME`` from a directory laid out like the Hub cache with HF_HUB_OFFLINE=1."""

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hatrefine import HatRefiner
from hatrefine.cli import main

REVISION = "0123456789abcdef0123456789abcdef01234567"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def as_hub_cache(uploaded, cache, repo):
    """Put an uploaded folder where huggingface_hub keeps a downloaded snapshot."""
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(uploaded, root / "snapshots" / REVISION)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(REVISION)


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """HfApi.create_repo / upload_folder that copy into tmp_path/uploads/ORG/NAME."""
    import huggingface_hub

    def create_repo(self, repo_id, private=False, exist_ok=False, **kw):
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, repo_id, folder_path, **kw):
        shutil.copytree(folder_path, tmp_path / "uploads" / repo_id, dirs_exist_ok=True)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return tmp_path / "uploads"


def test_push_then_load_offline_from_the_hub_cache(tmp_path, fake_hub, monkeypatch):
    run = tmp_path / "run"
    assert (
        invoke(
            "fit",
            "--out",
            run,
            "--steps",
            2,
            "--langevin-steps",
            2,
            "--batch-size",
            8,
            "--hat-width",
            4,
            "--eval-samples",
            16,
            "--calibration-samples",
            20,
            "--quiet",
        ).exit_code
        == 0
    )
    (tmp_path / "fid.json").write_text('{"fid": 12.5, "n_samples": 2000, "n_reference": 4500, "data": "builtin:mnist", "inception": "fid-helper"}')
    result = invoke("push", "--run", run, "--repo", "me/mnist-hat", "--fid", tmp_path / "fid.json")
    assert result.exit_code == 0, result.output
    uploaded = fake_hub / "me" / "mnist-hat"
    assert {p.name for p in uploaded.iterdir()} == {"config.json", "hat.safetensors", "sampling.json", "README.md", "samples.png"}
    card = (uploaded / "README.md").read_text()
    for fact in (
        "builtin:mnist",
        "FID 12.500",
        "quality (Frechet distance",
        "hf:me/mnist-hat",
        "![samples](samples.png)",
        "| Langevin steps K",
        "| hat network | default for the image size (width 4) |",
        "| sampling K and T chosen by | calibration |",
    ):
        assert fact in card, fact

    cache = tmp_path / "hub_cache"
    as_hub_cache(uploaded, cache, "me/mnist-hat")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    local, hub = HatRefiner.from_pretrained(run), HatRefiner.from_pretrained("hf:me/mnist-hat")
    a, b = local.sample(6, seed=3), hub.sample(6, seed=3)
    assert hub.sampling == local.sampling and local.sampling.chosen_by == "calibration"  # the calibrated T and K travel with the model
    assert torch.equal(a.x, b.x)
    result = invoke("sample", "--run", "hf:me/mnist-hat", "--n", 4, "--out", tmp_path / "s.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (4, 1, 32, 32)
    missing = invoke("sample", "--run", "hf:me/other", "--n", 4, "--out", tmp_path / "t.npz")
    assert missing.exit_code == 1 and "not in the local cache" in missing.output


def test_a_synthesis_run_is_pushed_with_its_generator(tmp_path, fake_hub):
    run = tmp_path / "syn"
    args = ["--steps", 2, "--langevin-steps", 2, "--batch-size", 8, "--bank-size", 16, "--hat-width", 4, "--generator-width", 8, "--eval-samples", 0, "--quiet"]
    assert invoke("synthesize", "--out", run, *args).exit_code == 0
    assert invoke("push", "--run", run, "--repo", "me/syn").exit_code == 0
    uploaded = fake_hub / "me" / "syn"
    assert (uploaded / "generator" / "model.safetensors").is_file() and not (uploaded / "generator" / "checkpoint").exists()
    loaded = HatRefiner.from_pretrained(uploaded)  # the uploaded folder works as a run directory on its own
    assert torch.equal(loaded.sample(3, seed=1).x, HatRefiner.from_pretrained(run).sample(3, seed=1).x)


def test_push_errors_are_one_line(tmp_path, monkeypatch):
    result = invoke("push", "--run", tmp_path / "nothing", "--repo", "me/x")
    assert result.exit_code == 1 and "(no config.json)" in result.output


def test_an_unreachable_hub_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    assert (
        invoke(
            "fit",
            "--out",
            tmp_path / "run",
            "--steps",
            1,
            "--langevin-steps",
            1,
            "--batch-size",
            4,
            "--hat-width",
            4,
            "--eval-samples",
            0,
            "--no-calibrate",
            "--quiet",
        ).exit_code
        == 0
    )

    def offline(self, *a, **k):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", offline)
    result = invoke("push", "--run", tmp_path / "run", "--repo", "me/x")
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "could not reach the Hub" in result.output


def test_model_card_names_a_discriminator_hat():
    from hatrefine.models.hub import model_card
    from hatrefine.settings.config import FitConfig

    card = model_card(FitConfig(hat="discriminator", discriminator="/models/netD.pth").to_dict(), None, None, has_grid=False)
    assert "| hat network | the discriminator of `/models/netD.pth`, negated, trained from its weights |" in card
