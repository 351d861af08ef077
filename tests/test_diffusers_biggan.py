"""The ``diffusers:`` and ``biggan:`` adapters, on tiny randomly initialised models built by the libraries."""

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import ndtr

from hatrefine import HatrefineError, load_generator
from hatrefine.adapters.biggan import truncated_normal
from hatrefine.networks.registry import absolute_spec, known_specs

from .test_cli import one_line_error, run

ROOT = Path(__file__).resolve().parents[1]
SCALE, SHIFT = 0.5, 0.1  # off diffusers' defaults, so a missing scaling shows
TINY_FIT = [
    "--steps",
    "2",
    "--langevin-steps",
    "2",
    "--batch-size",
    "4",
    "--eval-samples",
    "0",
    "--no-calibrate",
    "--hat",
    "small",
    "--hat-width",
    "4",
    "--quiet",
]


# -- diffusers: AutoencoderKL ------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
    )
    root = tmp_path_factory.mktemp("diffusers")
    vae.save_pretrained(root / "vae")
    vae.save_pretrained(root / "pipe" / "vae")  # a pipeline repository's layout
    return root / "vae"


def _library_vae(directory):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(directory, low_cpu_mem_usage=False).eval()


def test_vae_decodes_and_encodes_as_diffusers_does(vae_dir):
    g = load_generator(f"diffusers:{vae_dir}")
    assert g.latent_shape == (4, 16, 16) and g.image_shape == (3, 32, 32) and g.has_prior
    vae = _library_vae(vae_dir)
    z = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(g(z), vae.decode(z / SCALE + SHIFT).sample.clamp(-1, 1))
        torch.testing.assert_close(g.encode(x), (vae.encode(x).latent_dist.mean - SHIFT) * SCALE)


def test_vae_frozen_in_train_mode_and_gradient_reaches_z(vae_dir):
    g = load_generator(f"diffusers:{vae_dir}")
    g.train()
    assert not any(m.training for m in g.module.modules())
    assert all(not p.requires_grad for p in g.parameters())
    z = torch.randn(2, 4, 16, 16, requires_grad=True)
    g(z).square().sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in g.parameters())


def test_vae_chunked_decode_equals_unchunked(vae_dir):
    """Chunks of 2 under activation checkpointing: the images and the gradient of one batch of 5."""
    z = torch.randn(5, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    out = {}
    for chunk in (2, 5):
        zc = z.clone().requires_grad_(True)
        x = load_generator(f"diffusers:{vae_dir}[chunk={chunk}]")(zc)
        x.square().sum().backward()
        out[chunk] = (x.detach(), zc.grad)
    torch.testing.assert_close(out[2][0], out[5][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[2][1], out[5][1], rtol=1e-4, atol=1e-5)


def test_vae_options_listing_and_absolute_spec(vae_dir, monkeypatch):
    pipe = vae_dir.parent / "pipe"
    g = load_generator(f"diffusers:{pipe}[subfolder=vae,size=16]")
    assert g.latent_shape == (4, 8, 8) and g.image_shape == (3, 16, 16)
    monkeypatch.chdir(pipe.parent)
    assert absolute_spec("diffusers:pipe[subfolder=vae]") == f"diffusers:{pipe.resolve()}[subfolder=vae]"
    assert "diffusers:ORG/NAME or DIR[subfolder=vae,size=N,chunk=N]  (pip install 'hatrefine[diffusers]')" in known_specs()
    with pytest.raises(HatrefineError, match=r"add \[subfolder=vae\]"):
        load_generator(f"diffusers:{pipe}")
    with pytest.raises(HatrefineError, match="bad option 'colour=1'"):
        load_generator(f"diffusers:{vae_dir}[colour=1]")
    with pytest.raises(HatrefineError, match="size=x is not an int"):
        load_generator(f"diffusers:{vae_dir}[size=x]")
    with pytest.raises(HatrefineError, match="not a positive multiple of the VAE's downsampling factor 2"):
        load_generator(f"diffusers:{vae_dir}[size=15]")


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # (diffusers, offline)
def test_vae_from_the_hub_cache_offline_and_missing(vae_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-vae"
    (repo / "snapshots").mkdir(parents=True)
    (repo / "snapshots" / commit).symlink_to(vae_dir, target_is_directory=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert load_generator("diffusers:acme/tiny-vae").image_shape == (3, 32, 32)
    with pytest.raises(HatrefineError, match="^Hub repository acme/absent is not in the local cache and the Hub cannot be reached; go online once"):
        load_generator("diffusers:acme/absent")
    with pytest.raises(HatrefineError, match="neither a local directory nor a Hub repository id"):
        load_generator(f"diffusers:{tmp_path / 'no' / 'such' / 'dir'}")


def test_missing_packages_name_their_extra(vae_dir, biggan_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers -> ImportError
    with pytest.raises(HatrefineError, match=r"needs the diffusers package; pip install 'hatrefine\[diffusers\]'"):
        load_generator(f"diffusers:{vae_dir}")
    monkeypatch.setitem(sys.modules, "pytorch_pretrained_biggan", None)
    with pytest.raises(HatrefineError, match=r"needs the pytorch-pretrained-biggan package; pip install 'hatrefine\[biggan\]'"):
        load_generator("biggan:deep-128[class=1]", str(biggan_dir))


def test_fit_sample_refine_through_a_vae(vae_dir, tmp_path):
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).uniform(-1, 1, (40, 3, 32, 32)).astype(np.float32))
    spec = f"diffusers:{vae_dir}[chunk=2]"
    result = run("fit", "--generator", spec, "--data", tmp_path / "data.npz", "--out", tmp_path / "run", *TINY_FIT)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["hatrefine"]["generator"] == spec  # the options reload
    result = run("sample", "--run", tmp_path / "run", "--n", 3, "--out", tmp_path / "s.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (3, 3, 32, 32) and f["z"].shape == (3, 4, 16, 16)
        np.savez(tmp_path / "images.npz", x=f["g"])
    result = run(
        "refine", "--run", tmp_path / "run", "--input", tmp_path / "images.npz", "--out", tmp_path / "r.npz", "--start", "encoder", "--langevin-steps", 0
    )
    assert result.exit_code == 0, result.output
    g = load_generator(spec)
    with np.load(tmp_path / "r.npz") as f, np.load(tmp_path / "images.npz") as i:
        np.testing.assert_array_equal(f["x"], i["x"])  # no steps: the input back
        torch.testing.assert_close(torch.from_numpy(f["z"]), g.encode(torch.from_numpy(i["x"])))  # the encoder's latents


# -- BigGAN-deep ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def biggan_dir(tmp_path_factory):
    """A 128-pixel BigGAN of width 4 in the library's checkpoint layout (pytorch_model.bin + config.json)."""
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    torch.manual_seed(0)
    config = BigGANConfig(channel_width=4, layers=[(True, 16, 8), (True, 8, 4), (True, 4, 2), (True, 2, 1), (True, 1, 1)], attention_layer_position=2)
    model = BigGAN(config)
    torch.nn.init.ones_(model.generator.bn.weight)  # (the library leaves these uninitialised)
    torch.nn.init.zeros_(model.generator.bn.bias)
    with torch.no_grad():  # settle the spectral norms' power iterations
        for _ in range(30):
            model(torch.zeros(1, 128), torch.zeros(1, 1000), 1.0)
    directory = tmp_path_factory.mktemp("biggan")
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.json").write_text(config.to_json_string())
    return directory


def test_biggan_matches_the_library_on_the_same_noise(biggan_dir):
    from pytorch_pretrained_biggan import BigGAN, one_hot_from_int

    g = load_generator("biggan:deep-128[class=207,truncation=0.4]", str(biggan_dir))
    assert g.latent_shape == (128,) and g.image_shape == (3, 128, 128) and g.has_prior
    w = torch.randn(3, 128, generator=torch.Generator().manual_seed(0))
    noise = torch.from_numpy(0.4 * stats.truncnorm.ppf(ndtr(w.double().numpy()), -2, 2)).float()  # the reparametrisation, by scipy
    model = BigGAN.from_pretrained(str(biggan_dir)).eval()
    with torch.no_grad():
        torch.testing.assert_close(g(w), model(noise, torch.from_numpy(one_hot_from_int(207, 3)), 0.4), rtol=1e-4, atol=1e-5)


def test_biggan_without_a_class_draws_one_per_sample_and_holds_it(biggan_dir):
    from pytorch_pretrained_biggan import BigGAN

    g = load_generator("biggan:deep-128[truncation=0.4]", str(biggan_dir))
    assert g.latent_shape == (1128,) and g.classes == 1000
    z = g.sample_latent(6, generator=torch.Generator().manual_seed(0))
    w, label = z[:, :128], z[:, 128:]
    assert torch.equal(label.sum(1), torch.ones(6)) and len(set(label.argmax(1).tolist())) > 1
    noise = torch.from_numpy(0.4 * stats.truncnorm.ppf(ndtr(w.double().numpy()), -2, 2)).float()
    model = BigGAN.from_pretrained(str(biggan_dir)).eval()
    with torch.no_grad():
        torch.testing.assert_close(g(z), model(noise, label, 0.4), rtol=1e-4, atol=1e-5)  # each sample at its own class


def test_truncated_normal_reparametrisation(biggan_dir):
    w = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    u = truncated_normal(w).double()
    assert u.min() >= -2 and u.max() <= 2
    assert abs(u.std() - stats.truncnorm.std(-2, 2)) < 3e-3 and abs(u.mean()) < 3e-3
    grid = torch.linspace(-6, 6, 241, dtype=torch.float64)
    np.testing.assert_allclose(truncated_normal(grid).numpy(), stats.truncnorm.ppf(ndtr(grid.numpy()), -2, 2), atol=1e-9)
    far = truncated_normal(torch.tensor([-40.0, 40.0], dtype=torch.float64))
    assert far.tolist() == pytest.approx([-2, 2], abs=1e-6)  # finite, odd, at the bounds
    seen = []
    g = load_generator("biggan:deep-128[class=5,truncation=0.5]", str(biggan_dir))
    g.module.model.register_forward_pre_hook(lambda m, args: seen.append(args))
    with torch.no_grad():
        g(torch.randn(64, 128, generator=torch.Generator().manual_seed(1)))
    noise, label, truncation = seen[0]
    assert truncation == 0.5 and label.argmax(1).eq(5).all() and label.sum() == 64
    assert noise.abs().max() <= 1.0 and abs(noise.std() - 0.5 * stats.truncnorm.std(-2, 2)) < 0.01


def test_biggan_frozen_in_train_mode_and_gradient_reaches_w(biggan_dir):
    g = load_generator("biggan:deep-128[class=1]", str(biggan_dir))
    g.train()
    assert not any(m.training for m in g.module.modules())  # (training mode would run the spectral-norm power iteration)
    w = torch.randn(2, 128, requires_grad=True)
    g(w).square().sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in g.parameters())


def test_biggan_errors_and_cache(biggan_dir, tmp_path, monkeypatch):
    from pytorch_pretrained_biggan import file_utils, model

    with pytest.raises(HatrefineError, match=r"truncation must be in \(0, 1\], got 1.5"):
        load_generator("biggan:deep-128[class=1,truncation=1.5]", str(biggan_dir))
    with pytest.raises(HatrefineError, match="class must be in 0-999, got 1000"):
        load_generator("biggan:deep-128[class=1000]", str(biggan_dir))
    with pytest.raises(HatrefineError, match="BigGAN of 128x128 images, not deep-256"):
        load_generator("biggan:deep-256[class=1]", str(biggan_dir))
    (tmp_path / "alone").mkdir()
    (tmp_path / "alone" / "w.bin").write_bytes((biggan_dir / "pytorch_model.bin").read_bytes())
    with pytest.raises(HatrefineError, match="no config.json beside the weights; pass --checkpoint DIR"):
        load_generator("biggan:deep-128[class=1]", str(tmp_path / "alone" / "w.bin"))
    assert "biggan:deep-512[class=N,truncation=T]  (pip install 'hatrefine[biggan]')" in known_specs()

    cache = tmp_path / "cache"  # the library's cache: a file per url, its url noted in FILE.json
    cache.mkdir()
    monkeypatch.setattr(file_utils, "PYTORCH_PRETRAINED_BIGGAN_CACHE", cache)
    with pytest.raises(HatrefineError, match="^biggan:deep-128.* are not in .* and downloads are off .*; pass --checkpoint DIR"):
        load_generator("biggan:deep-128[class=1]")
    for name, urls in (("pytorch_model.bin", model.PRETRAINED_MODEL_ARCHIVE_MAP), ("config.json", model.PRETRAINED_CONFIG_ARCHIVE_MAP)):
        key = file_utils.url_to_filename(urls["biggan-deep-128"], etag='"1"')
        (cache / key).write_bytes((biggan_dir / name).read_bytes())
        (cache / f"{key}.json").write_text(json.dumps({"url": urls["biggan-deep-128"], "etag": '"1"'}))
    assert load_generator("biggan:deep-128[class=1]").image_shape == (3, 128, 128)


def test_fit_and_sample_through_biggan(biggan_dir, tmp_path):
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).uniform(-1, 1, (20, 3, 128, 128)).astype(np.float32))
    spec = "biggan:deep-128[class=3,truncation=0.5]"
    result = run("fit", "--generator", spec, "--checkpoint", biggan_dir, "--data", tmp_path / "data.npz", "--out", tmp_path / "run", *TINY_FIT)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["hatrefine"]
    assert saved["generator"] == spec and saved["checkpoint"] == str(biggan_dir.resolve())
    result = run("sample", "--run", tmp_path / "run", "--n", 2, "--out", tmp_path / "s.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (2, 3, 128, 128) and f["z"].shape == (2, 128)
        np.savez(tmp_path / "images.npz", x=f["g"])
    one_line_error(
        run("refine", "--run", tmp_path / "run", "--input", tmp_path / "images.npz", "--out", tmp_path / "r.npz", "--start", "encoder"),
        "has no encoder",
        "--start invert",
    )


@pytest.mark.parametrize("example", ["diffusers_vae.py", "biggan.py"])
def test_examples_run_tiny(example, tmp_path, monkeypatch):
    """Each example's commands, offline on a small random model (``--tiny``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [example, "--tiny"])
    runpy.run_path(str(ROOT / "examples" / example), run_name="__main__")
    name = "diffusers-vae" if example == "diffusers_vae.py" else "biggan"
    assert (tmp_path / "runs" / name / "samples.png").is_file() and (tmp_path / "runs" / name / "run" / "hat.safetensors").is_file()
