"""The generator adapter interface and the adapters that are not Mimicry."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hatrefine import HatrefineError, load_generator
from hatrefine.adapters import autoencoder_decoder, vae_decoder, wrap
from hatrefine.adapters.hub import save_generator_dir
from hatrefine.adapters.torchscript import save_torchscript
from hatrefine.networks.generator import Generator

from .conftest import TinyDecoder

ROOT = Path(__file__).resolve().parents[1]


def test_frozen_in_train_mode_sample_alone_equals_in_batch(tiny_generator):
    tiny_generator.train()  # the caller asks for training mode; batch norm must still use running stats
    z = torch.randn(6, 8)
    with torch.no_grad():
        batch = tiny_generator(z)
        alone = torch.cat([tiny_generator(z[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(alone, batch, rtol=0, atol=1e-6)
    assert not tiny_generator.module.training
    assert all(not p.requires_grad for p in tiny_generator.parameters())


def test_gradients_flow_to_latents_not_parameters(tiny_generator):
    z = torch.randn(2, 8, requires_grad=True)
    tiny_generator(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_generator.parameters())


def test_latent_shape_error(tiny_generator):
    with pytest.raises(HatrefineError, match=r"latent has shape \(4, 7\); tiny expects \(N, 8\)"):
        tiny_generator(torch.randn(4, 7))


def test_output_shape_errors():  # the forward checks of any Generator (wrap refuses these earlier, with a probe)
    with pytest.raises(HatrefineError, match=r"output of bad has 3 channels; bad works on 1"):
        Generator(lambda z: torch.zeros(len(z), 3, 8, 8), (8,), (1, 8, 8), name="bad")(torch.randn(2, 8))
    with pytest.raises(HatrefineError, match=r"output of bad is 16x16 pixels; bad works on 8x8"):
        Generator(lambda z: torch.zeros(len(z), 1, 16, 16), (8,), (1, 8, 8), name="bad")(torch.randn(2, 8))
    with pytest.raises(HatrefineError, match=r"output of bad has shape \(2, 64\); bad works on \(N, 1, 8, 8\)"):
        Generator(lambda z: torch.zeros(len(z), 64), (8,), (1, 8, 8), name="bad")(torch.randn(2, 8))
    with pytest.raises(HatrefineError, match=r"bad returned \(1, 1, 8, 8\) for 2 latents"):
        Generator(lambda z: torch.zeros(1, 1, 8, 8), (8,), (1, 8, 8), name="bad")(torch.randn(2, 8))


def test_output_range_error():
    g = wrap(lambda z: torch.full((len(z), 1, 8, 8), 3.0), (8,), (1, 8, 8), name="loud")
    with pytest.raises(HatrefineError, match=r"output of loud has values in \[3, 3\]; expected \[-1, 1\]"):
        g(torch.randn(2, 8))


def test_declared_range_is_mapped_to_minus_one_one():
    g = wrap(lambda z: torch.sigmoid(z.view(-1, 1, 2, 2)), (4,), (1, 2, 2), value_range=(0.0, 1.0))
    z = torch.randn(3, 4)
    torch.testing.assert_close(g(z), torch.sigmoid(z.view(-1, 1, 2, 2)) * 2 - 1)


def test_bad_construction_arguments():
    with pytest.raises(HatrefineError, match="is not \\(C, H, W\\)"):
        wrap(nn.Identity(), (8,), (8, 8))
    with pytest.raises(HatrefineError, match="must be positive"):
        wrap(nn.Identity(), (0,), (1, 8, 8))
    with pytest.raises(HatrefineError, match="value_range .* is empty"):
        wrap(nn.Identity(), (8,), (1, 8, 8), value_range=(1, 1))


def test_device_and_dtype_moves(tiny_generator):
    g64 = tiny_generator.to(torch.float64)
    z = g64.sample_latent(2)
    assert z.dtype == torch.float64 and g64(z).dtype == torch.float64


def test_vae_and_autoencoder_priors():
    assert vae_decoder(TinyDecoder(), (8,), (1, 8, 8)).has_prior
    assert not autoencoder_decoder(TinyDecoder(), (8,), (1, 8, 8)).has_prior


def test_torchscript_round_trip(tmp_path, tiny_generator):
    path = tmp_path / "g.pt"
    save_torchscript(tiny_generator.module, path, latent_shape=(8,), image_shape=(1, 8, 8))
    g = load_generator(f"torchscript:{path}")
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(g(z), tiny_generator(z))
    assert g.latent_shape == (8,) and g.image_shape == (1, 8, 8)


def test_torchscript_sidecar_and_missing_description(tmp_path, tiny_generator):
    path = tmp_path / "plain.pt"
    torch.jit.save(torch.jit.script(tiny_generator.module), str(path))
    with pytest.raises(HatrefineError, match="does not say its latent shape"):
        load_generator(f"torchscript:{path}")
    (tmp_path / "plain.pt.json").write_text(json.dumps({"latent_shape": [8]}))
    assert load_generator(f"torchscript:{path}").image_shape == (1, 8, 8)  # found by a forward pass


def _save_dir(directory, module):
    save_generator_dir(directory, module, "dcgan_generator", dict(nz=16, width=8, channels=1), latent_shape=(16,), image_shape=(1, 32, 32))


def test_hf_local_directory(tmp_path):
    from hatrefine.adapters.builtin import DCGANGenerator

    torch.manual_seed(0)
    module = DCGANGenerator(nz=16, width=8).eval()
    _save_dir(tmp_path / "repo", module)
    g = load_generator(f"hf:{tmp_path / 'repo'}")
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(g(z), module(z))


def test_hf_hub_cache_offline(tmp_path):
    """hf:ORG/NAME resolves from a Hub-cache layout with HF_HUB_OFFLINE=1 (no network)."""
    from hatrefine.adapters.builtin import DCGANGenerator

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-gan"
    _save_dir(repo / "snapshots" / commit, DCGANGenerator(nz=16, width=8).eval())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = "from hatrefine import load_generator; g = load_generator('hf:acme/tiny-gan'); print(g.image_shape)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "(1, 32, 32)" in out.stdout
    code = "from hatrefine import load_generator; load_generator('hf:acme/absent')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "not in the local cache" in out.stderr


def test_unknown_spec_lists_known_ones():
    with pytest.raises(HatrefineError) as e:
        load_generator("mimicry:sngan_imagenet")
    assert "mimicry:sngan_cifar10" in str(e.value) and "builtin:mnist" in str(e.value)
    with pytest.raises(HatrefineError, match="known: "):
        load_generator("nosuch")


def test_builtin_mnist_generator():
    g = load_generator("builtin:mnist")
    assert g.latent_shape == (64,) and g.image_shape == (1, 32, 32) and g.has_prior
    with torch.no_grad():
        x = g(g.sample_latent(16, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (16, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert x.std(dim=0).mean() > 0.1  # different latents give different digits


def test_custom_decoder_example_runs_end_to_end(tmp_path):
    """The example's whole path (wrap, fit, then the CLI reaching its factory by py: spec) at toy sizes."""
    example = ROOT / "examples" / "custom_decoder.py"
    out = subprocess.run(
        [sys.executable, str(example), "--tiny"], capture_output=True, text=True, cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(example.parent)}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "$ hatrefine refine" in out.stdout
    run = json.loads((tmp_path / "runs" / "custom" / "run" / "config.json").read_text())["hatrefine"]
    assert run["generator"] == "py:custom_decoder:make_decoder" and run["hat"] is None


def test_refine_takes_numpy_arrays_and_names_the_types_it_takes():
    import numpy as np

    from hatrefine.models.refiner import HatRefiner
    from hatrefine.networks.hat import create_hat
    from hatrefine.settings.config import FitConfig

    G = load_generator("builtin:mnist")
    refiner = HatRefiner(G, create_hat("small", (1, 32, 32), width=4), FitConfig())
    x = np.zeros((2, 1, 32, 32), np.float32)
    out = refiner.refine(x=x, n_steps=0, invert_steps=1)
    assert out.x.shape == (2, 1, 32, 32)
    with pytest.raises(HatrefineError, match="input images must be a torch.Tensor or a numpy array, got list"):
        refiner.refine(x=[[0.0]])


def test_wrap_probes_the_decoder_and_names_the_declared_and_actual_shapes():
    decoder = nn.Sequential(nn.Linear(32, 3 * 16 * 16), nn.Unflatten(1, (3, 16, 16)), nn.Tanh())
    with pytest.raises(HatrefineError, match=r"fails on latents of the declared latent_shape \(16,\).*declare the latent shape"):
        wrap(decoder, latent_shape=(16,), image_shape=(3, 16, 16))
    with pytest.raises(HatrefineError, match=r"makes \(3, 16, 16\) images from latents of shape \(32,\), not the declared image_shape \(1, 28, 28\)"):
        wrap(decoder, latent_shape=(32,), image_shape=(1, 28, 28))
    assert wrap(decoder, latent_shape=(32,), image_shape=(3, 16, 16)).image_shape == (3, 16, 16)
