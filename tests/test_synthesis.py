"""Tandem synthesis: the generator moves toward the bank, the bank turns over, resume is exact."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hatrefine import HatrefineError, HatRefiner, load_generator
from hatrefine.files.checkpoint import read_state_dict
from hatrefine.settings.config import SynthesisConfig
from hatrefine.training.synthesis import SynthesisTrainer


@pytest.fixture
def squares(tmp_path):
    rng = np.random.default_rng(0)
    x = np.full((128, 1, 32, 32), -1.0, dtype=np.float32)
    for img in x:
        r, c = rng.integers(4, 20, size=2)
        img[:, r : r + 8, c : c + 8] = 1.0
    path = tmp_path / "squares.npz"
    np.savez(path, x=x)
    return str(path)


def tiny(data, **kw):
    base = dict(
        data=data, hat_width=4, generator_width=8, latent_dim=8, steps=4, batch_size=8, bank_size=32, langevin_steps=3,
        log_every=1, save_every=2, sample_every=2, eval_samples=0, device="cpu", generator_lr=1e-2, calibrate=False,
    )  # fmt: skip
    return SynthesisConfig(**{**base, **kw})


def test_bank_starts_as_the_initial_generator(tmp_path, squares):
    t = SynthesisTrainer(tiny(squares), tmp_path / "run")
    assert t.bank_z.shape == (32, 8) and t.bank_x.shape == (32, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(t.generator(t.bank_z), t.bank_x)


def test_generator_step_fits_the_bank_batch_and_overwrites_its_slots(tmp_path, squares):
    t = SynthesisTrainer(tiny(squares), tmp_path / "run")
    t.bank_x = torch.rand_like(t.bank_x) * 2 - 1  # targets the generator does not already produce
    old_z, old_x = t.bank_z.clone(), t.bank_x.clone()
    z_new, x_new = torch.randn(8, 8), torch.rand(8, 1, 32, 32)
    params_before = [p.clone() for p in t.generator.module.parameters()]
    idx, loss_before = t.generator_step(z_new, x_new)
    with torch.no_grad():
        loss_after = 1000 * F.mse_loss(t.generator.module(old_z[idx]), old_x[idx]).item()
    assert loss_after < loss_before
    assert any(not torch.equal(a, b) for a, b in zip(params_before, t.generator.module.parameters()))
    assert not any(p.requires_grad for p in t.generator.module.parameters())  # frozen again for sampling
    assert torch.equal(t.bank_z[idx], z_new) and torch.equal(t.bank_x[idx], x_new)
    rest = torch.ones(32, dtype=torch.bool)
    rest[idx] = False
    assert torch.equal(t.bank_z[rest], old_z[rest]) and torch.equal(t.bank_x[rest], old_x[rest])


def test_generator_batch_norm_stays_in_fixed_mode(tmp_path, squares):
    t = SynthesisTrainer(tiny(squares, steps=2), tmp_path / "run")
    t.run(progress=False)
    for m in t.generator.module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) and torch.equal(m.running_var, torch.ones_like(m.running_var))


def test_resume_reproduces_bank_and_weights(tmp_path, squares):
    SynthesisTrainer(tiny(squares, steps=4), tmp_path / "full").run(progress=False)
    SynthesisTrainer(tiny(squares, steps=2), tmp_path / "split").run(progress=False)
    resumed = SynthesisTrainer(None, tmp_path / "split", resume=True, steps=4)
    assert resumed.step == 2
    resumed.run(progress=False)
    full = read_state_dict(tmp_path / "full" / "checkpoint" / "state.safetensors")
    split = read_state_dict(tmp_path / "split" / "checkpoint" / "state.safetensors")
    assert full.keys() == split.keys() and {"bank_z", "bank_x"} <= full.keys()
    for k in full:
        assert torch.equal(full[k], split[k]), k


def test_the_learned_generator_is_an_adapter_and_the_run_samples(tmp_path, squares):
    t = SynthesisTrainer(tiny(squares, steps=2), tmp_path / "run")
    t.run(progress=False)
    G = load_generator(f"dir:{tmp_path / 'run'}")
    z = torch.randn(4, 8)
    with torch.no_grad():
        assert torch.allclose(G(z), t.generator(z))
    refiner = HatRefiner.from_pretrained(tmp_path / "run")
    out = refiner.sample(4, seed=0)
    assert out.x.shape == (4, 1, 32, 32) and torch.allclose(out.g, G(out.z), atol=1e-6)


def test_synthesis_settings_are_checked():
    with pytest.raises(HatrefineError, match="bank-size"):
        SynthesisConfig(bank_size=8, batch_size=16)
    with pytest.raises(HatrefineError, match="image-shape"):
        SynthesisConfig(image_shape="32x32")
    with pytest.raises(HatrefineError, match="conditional"):
        SynthesisConfig(mode="joint")


@pytest.mark.parametrize("shape, widths", [("3,32,32", [256, 256, 256, 256]), ("3,64,64", [1024, 512, 256, 128, 64])])
def test_full_size_generators_follow_the_sngan_layout(shape, widths):
    arch, kwargs, nz = SynthesisConfig(image_shape=shape).architecture()
    assert arch == "sngan_resnet_generator" and kwargs["channels"] == widths and nz == 128
    small = SynthesisConfig(image_shape=shape, generator_width=16).architecture()[1]["channels"]
    from hatrefine.networks.registry import create_architecture

    size = int(shape.split(",")[1])
    assert create_architecture("sngan_resnet_generator", **{**kwargs, "channels": small})(torch.randn(2, 128)).shape == (2, 3, size, size)


def test_learned_generators_end_in_gen_factor_times_tanh():
    """The authors' gen_factor 2 for generators learned from scratch (synthesis, the retrofit decoder); 1 for runs saved before it existed."""
    from hatrefine.networks.autoencoder import Decoder
    from hatrefine.networks.registry import create_architecture
    from hatrefine.settings.autoencoder import AEConfig
    from hatrefine.settings.config import SynthesisConfig

    for image_shape in ("1,32,32", "3,32,32"):
        config = SynthesisConfig(image_shape=image_shape, generator_width=8)
        arch, kwargs, nz = config.architecture()
        assert kwargs["out_factor"] == 2.0
        z = torch.randn(3, nz)
        outputs = []
        for factor in (1.0, 2.0):
            torch.manual_seed(0)
            outputs.append(create_architecture(arch, **(kwargs | {"out_factor": factor})).eval()(z))
        torch.testing.assert_close(outputs[1], 2 * outputs[0])
    saved = SynthesisConfig().to_dict()
    del saved["gen_factor"]
    assert SynthesisConfig.from_dict(saved).gen_factor == 1.0
    ae = AEConfig(width=4)
    assert ae.gen_factor == 2.0 and Decoder(**ae.decoder_kwargs()).out_factor == 2.0
