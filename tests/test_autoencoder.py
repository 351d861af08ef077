"""Retrofit autoencoders: sphere projection, pretraining, the ae: adapter and its one mode."""

import math

import numpy as np
import pytest
import torch

from hatrefine import HatrefineError, load_generator
from hatrefine.files.checkpoint import read_state_dict
from hatrefine.networks.autoencoder import Decoder, Encoder, project_to_sphere
from hatrefine.settings.autoencoder import AEConfig
from hatrefine.settings.config import FitConfig
from hatrefine.training.autoencoder import AutoencoderTrainer
from hatrefine.training.trainer import Trainer


@pytest.fixture
def digits16(tmp_path):
    """64 16x16 'digits': random bright strokes on black, stored as uint8."""
    rng = np.random.default_rng(0)
    x = np.zeros((64, 16, 16), dtype=np.uint8)
    for img in x:
        r, c = rng.integers(2, 12, size=2)
        img[r : r + 4, c : c + 2] = 255
    path = tmp_path / "d.npz"
    np.savez(path, x=x)
    return str(path)


def tiny_ae(data, **kw):
    base = dict(data=data, image_shape=[1, 16, 16], latent_shape=[1, 8, 8], width=8, steps=30, batch_size=16, lr=3e-3, device="cpu", log_every=1, save_every=10)
    return AEConfig(**{**base, **kw})


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e3])
def test_sphere_projection_has_norm_sqrt_m(scale):
    e = torch.randn(5, 1, 16, 16) * scale
    z = project_to_sphere(e)
    assert torch.allclose(z.flatten(1).norm(dim=1), torch.full((5,), math.sqrt(256.0)), rtol=1e-6)
    assert torch.allclose(z / z.flatten(1).norm(dim=1).view(5, 1, 1, 1), e / e.flatten(1).norm(dim=1).view(5, 1, 1, 1), atol=1e-6)  # direction kept


def test_encoder_and_decoder_shapes():
    enc, dec = Encoder(3, 32, (2, 8, 8), width=4), Decoder(3, 32, (2, 8, 8), width=4)
    z = enc(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 2, 8, 8) and torch.allclose(z.flatten(1).norm(dim=1), torch.full((2,), math.sqrt(128.0)))
    x = dec(z)
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1


def test_latent_must_divide_the_image_by_a_power_of_two():
    with pytest.raises(HatrefineError, match="power of 2"):
        AEConfig(image_shape=[1, 32, 32], latent_shape=[1, 12, 12])


def test_reconstruction_loss_falls(tmp_path, digits16):
    trainer = AutoencoderTrainer(tiny_ae(digits16), tmp_path / "ae")
    losses = [trainer.train_step()["loss"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_resume_reproduces_the_uninterrupted_autoencoder(tmp_path, digits16):
    AutoencoderTrainer(tiny_ae(digits16, steps=20), tmp_path / "full").run(progress=False)
    AutoencoderTrainer(tiny_ae(digits16, steps=10), tmp_path / "split").run(progress=False)
    AutoencoderTrainer(None, tmp_path / "split", resume=True, steps=20).run(progress=False)
    full = read_state_dict(tmp_path / "full" / "checkpoint" / "state.safetensors")
    split = read_state_dict(tmp_path / "split" / "checkpoint" / "state.safetensors")
    assert full.keys() == split.keys() and all(torch.equal(full[k], split[k]) for k in full)
    assert (tmp_path / "split" / "log.csv").read_text().count("\n") == 21
    for name in ("reconstructions.png", "prior_samples.png", "model.safetensors", "encoder.safetensors"):
        assert (tmp_path / "split" / name).is_file()


def test_ae_spec_loads_the_decoder_without_a_prior(tmp_path, digits16):
    trainer = AutoencoderTrainer(tiny_ae(digits16, steps=10), tmp_path / "ae")
    trainer.run(progress=False)
    G = load_generator(f"ae:{tmp_path / 'ae'}")
    assert G.latent_shape == (1, 8, 8) and G.image_shape == (1, 16, 16) and not G.has_prior
    z = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(G(z), trainer.decoder(z), atol=1e-6)  # the saved decoder, bit for bit up to float


def test_the_resnet_decoder_is_the_authors_trains_resumes_and_loads_as_ae(tmp_path, digits16):
    """--decoder resnet (the cifar10-retrofit recipe's): the authors' gen_decoder at width << levels,
    with --batch-norm batch its running statistics learned, resumed exactly and used by ae:DIR."""
    from hatrefine.networks.resblocks import ResNetDecoder

    config = tiny_ae(digits16, steps=20, decoder="resnet", batch_norm="batch")
    trainer = AutoencoderTrainer(config, tmp_path / "full")
    assert isinstance(trainer.decoder, ResNetDecoder) and trainer.decoder.b5.num_features == 16  # width 8, one doubling
    trainer.run(progress=False)
    assert trainer.decoder.training and trainer.decoder.b5.training and trainer.decoder.b5.running_var.ne(1).any()  # (figures ran in eval mode, then back)
    AutoencoderTrainer(tiny_ae(digits16, steps=10, decoder="resnet", batch_norm="batch"), tmp_path / "split").run(progress=False)
    AutoencoderTrainer(None, tmp_path / "split", resume=True, steps=20).run(progress=False)
    full = read_state_dict(tmp_path / "full" / "checkpoint" / "state.safetensors")
    split = read_state_dict(tmp_path / "split" / "checkpoint" / "state.safetensors")
    assert any("running_mean" in k for k in full) and all(torch.equal(full[k], split[k]) for k in full)
    G = load_generator(f"ae:{tmp_path / 'full'}")
    z = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(G(z), trainer.decoder.eval()(z))  # eval-mode batch norm: the running statistics
    with pytest.raises(HatrefineError, match=r"--decoder resnet .* doubles the latent's side once; .* use --latent-shape C,8,8"):
        AEConfig(image_shape=[1, 16, 16], latent_shape=[1, 4, 4], decoder="resnet")


def test_the_resnet_decoders_batch_norm_stays_in_inference_mode_by_default_as_the_authors(tmp_path, digits16):
    """The authors call their decoder with training=False while pretraining: the statistics stay at
    0 and 1 (each batch norm a learned per-channel scale and shift), and ae:DIR samples with them."""
    trainer = AutoencoderTrainer(tiny_ae(digits16, steps=12, decoder="resnet"), tmp_path / "ae")
    trainer.run(progress=False)
    norms = [m for m in trainer.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 8 and not any(m.training for m in norms) and trainer.decoder.training
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) and torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    assert any(m.weight.ne(1).any() for m in norms)  # gamma learned
    resumed = AutoencoderTrainer(None, tmp_path / "ae", resume=True, steps=14)
    resumed.run(progress=False)
    norms = [m for m in resumed.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms) and not any(m.training for m in norms)


def test_ae_spec_refuses_conditional_mode_and_other_directories(tmp_path, digits16):
    AutoencoderTrainer(tiny_ae(digits16, steps=10), tmp_path / "ae").run(progress=False)
    config = FitConfig(generator=f"ae:{tmp_path / 'ae'}", data=digits16, mode="conditional", hat_width=4, device="cpu")
    with pytest.raises(HatrefineError, match="no latent prior.*--mode joint"):
        Trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(HatrefineError, match="not an autoencoder directory"):
        load_generator(f"ae:{tmp_path}")


def test_retrofit_fit_runs_in_joint_mode_with_a_y_prior(tmp_path, digits16):
    AutoencoderTrainer(tiny_ae(digits16, steps=10), tmp_path / "ae").run(progress=False)
    config = FitConfig(
        generator=f"ae:{tmp_path / 'ae'}", data=digits16, mode="joint", y_sigma=0.1, hat="small", hat_width=4, steps=2,
        batch_size=8, langevin_steps=3, eval_samples=0, device="cpu",
    )  # fmt: skip
    trainer = Trainer(config, tmp_path / "run")
    trainer.run(progress=False)
    assert trainer.last_samples.z.shape == (8, 1, 8, 8) and (trainer.last_samples.y != 0).any()
