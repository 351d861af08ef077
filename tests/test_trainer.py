"""Fitting H: learning signal, exact resume, checkpoints that reproduce outputs, refine."""

import numpy as np
import pytest
import torch

from hatrefine import HatrefineError
from hatrefine.files.checkpoint import read_state_dict
from hatrefine.models.refiner import HatRefiner
from hatrefine.settings.config import FitConfig
from hatrefine.training.trainer import Trainer


@pytest.fixture
def blobs(tmp_path):
    """8x8 'data': bright squares in the middle, unlike what the tiny generator makes."""
    rng = np.random.default_rng(0)
    x = np.full((256, 1, 8, 8), -1.0, dtype=np.float32)
    x[:, :, 2:6, 2:6] = rng.uniform(0.5, 1.0, size=(256, 1, 1, 1))
    path = tmp_path / "blobs.npz"
    np.savez(path, x=x)
    return str(path)


def tiny(data, **kw):
    base = dict(
        data=data, hat="small", hat_width=8, steps=6, batch_size=16, langevin_steps=4, eps_y=1e-2, eps_z=5e-2,
        temperature=1e-2, lr=1e-3, log_every=1, save_every=3, sample_every=3, eval_samples=8, device="cpu", calibrate=False,
    )  # fmt: skip
    return FitConfig(**{**base, **kw})


def _gap(trainer):
    with torch.no_grad():
        data = trainer.data.batch(0)
        z = trainer.generator.sample_latent(64, generator=torch.Generator().manual_seed(0))
        return (trainer.hat(data).mean() - trainer.hat(trainer.generator(z)).mean()).item()


def test_fit_lowers_data_energy_relative_to_samples(tmp_path, tiny_generator, blobs):
    trainer = Trainer(tiny(blobs, steps=15), tmp_path / "run", generator=tiny_generator)
    before = _gap(trainer)
    trainer.run(progress=False)
    assert _gap(trainer) < before - 0.1


def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path, tiny_generator, blobs):
    Trainer(tiny(blobs, steps=6), tmp_path / "full", generator=tiny_generator).run(progress=False)
    Trainer(tiny(blobs, steps=3), tmp_path / "split", generator=tiny_generator).run(progress=False)
    resumed = Trainer(None, tmp_path / "split", generator=tiny_generator, resume=True, steps=6)
    assert resumed.step == 3
    resumed.run(progress=False)
    full = read_state_dict(tmp_path / "full" / "checkpoint" / "state.safetensors")
    split = read_state_dict(tmp_path / "split" / "checkpoint" / "state.safetensors")
    assert full.keys() == split.keys()
    for k in full:
        assert torch.equal(full[k], split[k]), k
    log_full = (tmp_path / "full" / "log.csv").read_text().splitlines()
    log_split = (tmp_path / "split" / "log.csv").read_text().splitlines()
    strip = lambda rows: [r.rsplit(",", 1)[0] for r in rows]  # all but the seconds column
    assert strip(log_full) == strip(log_split) and len(log_full) == 7


def test_existing_run_is_not_overwritten(tmp_path, tiny_generator, blobs):
    Trainer(tiny(blobs, steps=1), tmp_path / "run", generator=tiny_generator).run(progress=False)
    before = (tmp_path / "run" / "hat.safetensors").read_bytes()
    with pytest.raises(HatrefineError, match="already holds files; pass --resume .* --overwrite"):
        Trainer(tiny(blobs, steps=1), tmp_path / "run", generator=tiny_generator)
    assert (tmp_path / "run" / "hat.safetensors").read_bytes() == before
    with pytest.raises(HatrefineError, match="nothing to resume"):
        Trainer(None, tmp_path / "empty", generator=tiny_generator, resume=True)


def test_run_directory_contents(tmp_path, tiny_generator, blobs):
    out = tmp_path / "run"
    Trainer(tiny(blobs), out, generator=tiny_generator).run(progress=False)
    for name in ("config.json", "hat.safetensors", "log.csv", "training_curve.png", "before_after.png", "langevin_path.png", "quality.json"):
        assert (out / name).is_file(), name
    assert (out / "samples" / "step_000003.png").is_file() and (out / "samples" / "step_000006.png").is_file()
    assert not (out / "checkpoint.tmp").exists()


def test_loaded_refiner_reproduces_outputs(tmp_path, tiny_generator, blobs):
    trainer = Trainer(tiny(blobs), tmp_path / "run", generator=tiny_generator)
    trainer.run(progress=False)
    fitted = trainer.refiner()
    fitted.save_pretrained(tmp_path / "saved")
    for directory in (tmp_path / "run", tmp_path / "saved"):
        loaded = HatRefiner.from_pretrained(directory, generator=tiny_generator)
        a, b = fitted.sample(10, seed=5, batch_size=4), loaded.sample(10, seed=5, batch_size=4)
        assert torch.equal(a.x, b.x) and torch.equal(a.z, b.z)
    assert not torch.equal(fitted.sample(10, seed=6).x, a.x)


def test_refine_from_images_reproduces_the_input_at_step_zero(tmp_path, tiny_generator, blobs):
    trainer = Trainer(tiny(blobs, steps=2), tmp_path / "run", generator=tiny_generator)
    trainer.run(progress=False)
    refiner = trainer.refiner()
    x = torch.from_numpy(np.load(blobs)["x"][:12])
    out = refiner.refine(x=x, n_steps=0, invert_steps=20, batch_size=5)
    assert torch.equal(out.x, x)
    torch.testing.assert_close(out.x, out.g + out.y)
    moved = refiner.refine(x=x, n_steps=5, invert_steps=20)
    assert not torch.equal(moved.x, x)
    pixel = refiner.refine(x=x, n_steps=5, invert_steps=20, batch_size=5, pixel_only=True)
    torch.testing.assert_close(pixel.g, out.g)  # Z stays at the inversion's latents


def test_refine_from_latents_and_shape_errors(tmp_path, tiny_generator, blobs):
    trainer = Trainer(tiny(blobs, steps=1), tmp_path / "run", generator=tiny_generator)
    refiner = trainer.refiner()
    z = tiny_generator.sample_latent(3)
    out = refiner.refine(z=z, n_steps=0)
    with torch.no_grad():
        torch.testing.assert_close(out.x, tiny_generator(z))
    with pytest.raises(HatrefineError, match="input images has 3 channels; tiny works on 1"):
        refiner.refine(x=torch.zeros(2, 3, 8, 8))
    with pytest.raises(HatrefineError, match=r"input images have values in \[0, 2\]; hatrefine expects \[-1, 1\]"):
        refiner.refine(x=torch.linspace(0, 2, 128).view(2, 1, 8, 8))


@pytest.mark.parametrize("killed", ["between the renames", "while removing checkpoint.old"])
def test_resume_recovers_from_a_crash_inside_the_checkpoint_swap(tmp_path, tiny_generator, blobs, killed):
    Trainer(tiny(blobs, steps=6), tmp_path / "full", generator=tiny_generator).run(progress=False)
    Trainer(tiny(blobs, steps=3), tmp_path / "split", generator=tiny_generator).run(progress=False)
    ckpt = tmp_path / "split" / "checkpoint"
    if killed == "between the renames":
        ckpt.rename(ckpt.with_name("checkpoint.old"))
    else:  # the new checkpoint is in place, the previous one half deleted
        old = ckpt.with_name("checkpoint.old")
        old.mkdir()
        (old / "state.json").write_text((ckpt / "state.json").read_text())
    resumed = Trainer(None, tmp_path / "split", generator=tiny_generator, resume=True, steps=6)
    assert resumed.step == 3
    resumed.run(progress=False)
    full = read_state_dict(tmp_path / "full" / "hat.safetensors")
    split = read_state_dict(tmp_path / "split" / "hat.safetensors")
    assert all(torch.equal(full[k], split[k]) for k in full)


def _poison(trainer, at_step, times=1):
    """Make H return NaN during step ``at_step + 1`` (``times`` calls)."""
    original, left = trainer.hat.forward, [times]

    def forward(x):
        out = original(x)
        if trainer.step == at_step and left[0] > 0:
            left[0] -= 1
            return out * float("nan")
        return out

    trainer.hat.forward = forward


def test_a_nan_rolls_back_to_the_last_checkpoint_with_smaller_steps(tmp_path, tiny_generator, blobs):
    import csv

    trainer = Trainer(tiny(blobs, steps=8, save_every=3), tmp_path / "run", generator=tiny_generator)
    _poison(trainer, at_step=4)
    trainer.run(progress=False)
    assert trainer.step == 8
    assert [(e["step"], e["resumed_from"], e["backoff"]) for e in trainer.rollbacks] == [(5, 3, 0.5)]
    assert "non-finite" in trainer.rollbacks[0]["reason"]
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))  # the failed step is not logged twice
    assert {float(r["lr"]) for r in rows[:3]} == {1e-3} and {float(r["lr"]) for r in rows[3:]} == {5e-4}
    assert {float(r["eps_y"]) for r in rows[3:]} == {5e-3}
    state = read_state_dict(tmp_path / "run" / "checkpoint" / "state.safetensors")
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    resumed = Trainer(None, tmp_path / "run", generator=tiny_generator, resume=True)
    assert resumed.backoff == 0.5 and resumed.sampler.eps_y == 5e-3 and len(resumed.rollbacks) == 1


def test_a_rolled_back_run_samples_with_the_step_sizes_training_ended_with(tmp_path, tiny_generator, blobs):
    trainer = Trainer(tiny(blobs, steps=8, save_every=3, eval_samples=0), tmp_path / "run", generator=tiny_generator)
    _poison(trainer, at_step=4)
    trainer.run(progress=False)
    assert trainer.refiner().sampler().eps_y == 5e-3  # the end-of-fit report's sampler
    reloaded = HatRefiner.from_pretrained(tmp_path / "run", generator=tiny_generator)
    sampler = reloaded.sampler()
    assert (sampler.eps_y, sampler.eps_z) == (5e-3, 2.5e-2)  # tiny(): 1e-2 and 5e-2, halved once
    history = reloaded.sampling.step_size_history
    assert [(h["step"], h["eps_y"]) for h in history] == [(0, 1e-2), (5, 5e-3)] and "non-finite" in history[1]["reason"]
    assert reloaded.sampler(eps_y=1e-2).eps_y == 1e-2  # an explicit value still wins
    reloaded.save_pretrained(tmp_path / "copy")
    assert HatRefiner.from_pretrained(tmp_path / "copy", generator=tiny_generator).sampler().eps_z == 2.5e-2


def test_non_finite_weights_are_never_saved(tmp_path, tiny_generator, blobs):
    from hatrefine.training.loop import Divergence

    trainer = Trainer(tiny(blobs, steps=3), tmp_path / "run", generator=tiny_generator)
    trainer.run(progress=False)
    before = (tmp_path / "run" / "checkpoint" / "state.safetensors").read_bytes()
    with torch.no_grad():
        next(trainer.hat.parameters())[0] = float("nan")
    with pytest.raises(Divergence, match="non-finite weights"):
        trainer.save_checkpoint()
    assert (tmp_path / "run" / "checkpoint" / "state.safetensors").read_bytes() == before


def test_repeated_divergence_gives_up_with_advice(tmp_path, tiny_generator, blobs):
    trainer = Trainer(tiny(blobs, steps=6, max_rollbacks=1), tmp_path / "run", generator=tiny_generator)
    _poison(trainer, at_step=1, times=10**6)
    with pytest.raises(HatrefineError, match="diverged 2 times.*lower --lr"):
        trainer.run(progress=False)


def test_energy_gap_growth_compares_consecutive_windows_from_the_third_on():
    from hatrefine.training.trainer import energy_gap_growth

    gaps = [1.0, 3.0, 2.0, 20.0, 30.0, 40.0]  # medians 2 and 30
    assert energy_gap_growth(gaps, 9, window=3) == 15.0
    assert energy_gap_growth(gaps, 6, window=3) is None  # the second window: still warming up
    assert energy_gap_growth(gaps, 10, window=3) is None  # not the end of a window
    assert energy_gap_growth(gaps[1:], 9, window=3) is None  # history incomplete (a checkpoint from before the check)


def test_a_growing_energy_gap_rolls_back(tmp_path, tiny_generator, blobs, monkeypatch):
    import hatrefine.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "GROWTH_WINDOW", 4)
    config = tiny(blobs, steps=24, save_every=4, max_energy_growth=100)
    trainer = Trainer(config, tmp_path / "run", generator=tiny_generator)
    original = trainer.hat.forward

    def forward(x):  # in H's updates from update 17 on, until the first rollback: energies x1000
        out = original(x)
        training = next(trainer.hat.parameters()).requires_grad  # chains run H frozen
        return out * 1000 if training and trainer.step >= 16 and not trainer.rollbacks else out

    trainer.hat.forward = forward
    trainer.run(progress=False)
    assert trainer.step == 24
    assert [(e["step"], e["resumed_from"]) for e in trainer.rollbacks] == [(20, 16)]
    assert "energy gap" in trainer.rollbacks[0]["reason"] and "--max-energy-growth 100" in trainer.rollbacks[0]["reason"]
    assert len(trainer.energy_gaps) == 8
    resumed = Trainer(None, tmp_path / "run", generator=tiny_generator, resume=True)
    assert resumed.energy_gaps == trainer.energy_gaps  # the windows survive a resume exactly
    with pytest.raises(HatrefineError, match="--max-energy-growth must be above 1"):
        tiny(blobs, max_energy_growth=1)


def test_adam_beta1_sets_the_momentum_of_the_h_update_and_survives_resume(tmp_path, tiny_generator, blobs):
    weights = {}
    for beta1 in (0.9, 0.5):
        trainer = Trainer(tiny(blobs, steps=3, adam_beta1=beta1), tmp_path / str(beta1), generator=tiny_generator)
        trainer.run(progress=False)
        weights[beta1] = torch.cat([p.flatten() for p in trainer.hat.parameters()])
    assert not torch.allclose(weights[0.9], weights[0.5])  # same seed, same data: only the momentum differs
    resumed = Trainer(None, tmp_path / "0.5", generator=tiny_generator, resume=True)
    assert tuple(resumed.opt.param_groups[0]["betas"]) == (0.5, 0.999)
    with pytest.raises(HatrefineError, match="--adam-beta1 must be in"):
        tiny(blobs, adam_beta1=1.0)


def test_simultaneous_joint_update_learns_and_is_what_the_saved_run_samples_with(tmp_path, tiny_generator, blobs):
    trainer = Trainer(tiny(blobs, steps=15, joint_update="simultaneous"), tmp_path / "run", generator=tiny_generator)
    assert trainer.sampler.joint_update == "simultaneous"
    before = _gap(trainer)
    trainer.run(progress=False)
    assert _gap(trainer) < before - 0.1
    assert HatRefiner.from_pretrained(tmp_path / "run", generator=tiny_generator).sampler().joint_update == "simultaneous"
    with pytest.raises(HatrefineError, match="unknown --joint-update 'both'; use alternate or simultaneous"):
        tiny(blobs, joint_update="both")


def test_channels_last_and_bf16_switches(tmp_path, tiny_generator, blobs):
    from hatrefine.networks.hat import create_hat
    from hatrefine.sampling.energy import HatEnergy

    hat = create_hat("small", (1, 8, 8), 8)
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    plain = HatEnergy(hat, tiny_generator).image_energy(x)
    fast = HatEnergy(create_hat("small", (1, 8, 8), 8).requires_grad_(False), tiny_generator, channels_last=True)
    fast.hat.load_state_dict(hat.state_dict())
    assert next(p for p in fast.hat.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.image_energy(x), plain, rtol=1e-5, atol=1e-5)
    trainer = Trainer(tiny(blobs, steps=2, amp=True, channels_last=True, eval_samples=0), tmp_path / "run", generator=tiny_generator)
    trainer.run(progress=False)
    assert all(torch.isfinite(p).all() for p in trainer.hat.parameters())


def test_sampling_temperature_changes_sampling_only(tmp_path, tiny_generator, blobs):
    plain = Trainer(tiny(blobs), tmp_path / "plain", generator=tiny_generator)
    plain.run(progress=False)
    cold = Trainer(tiny(blobs, temperature_test=2.5e-3), tmp_path / "cold", generator=tiny_generator)
    cold.run(progress=False)
    a, b = read_state_dict(tmp_path / "plain" / "hat.safetensors"), read_state_dict(tmp_path / "cold" / "hat.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # training chains run at the training T
    refiner = HatRefiner.from_pretrained(tmp_path / "cold", generator=tiny_generator)
    y, g = torch.randn(4, 1, 8, 8) * 0.1, tiny_generator(tiny_generator.sample_latent(4))
    with torch.no_grad():
        torch.testing.assert_close(refiner.sampler().energy(y, g) * 2.5e-3, refiner.energy(y, g) * 1e-2)
    cold_x = refiner.sample(8, seed=1).x
    assert not torch.allclose(cold_x, plain.refiner().sample(8, seed=1).x)
    torch.testing.assert_close(cold_x, plain.refiner().sample(8, seed=1, temperature=2.5e-3).x)
    with pytest.raises(HatrefineError, match="--temperature-test must be positive"):
        tiny(blobs, temperature_test=0.0)


def test_data_gradient_is_the_input_gradient_of_u_at_the_data_half():
    from hatrefine.training.trainer import data_gradient

    w, temperature = torch.randn(1, 4, 4, requires_grad=True), 0.1
    images = torch.randn(6, 1, 4, 4, requires_grad=True)
    energies = (images * w).flatten(1).sum(1) / temperature  # U = H / T of a linear hat
    grad = data_gradient(energies[:2], images)
    assert grad.shape == (2, 16)
    assert torch.allclose(grad, (w / temperature).flatten().expand(2, 16))
    assert grad.requires_grad  # kept in the graph: the penalty trains H through it


def _log_column(run, name):
    import csv

    with open(run / "log.csv") as f:
        return [float(r[name]) for r in csv.DictReader(f)]


def test_grad_penalty_holds_down_the_input_gradient_scale_that_a_plain_fit_grows(tmp_path, tiny_generator, blobs):
    runs = {}
    for weight in (0.0, 1.0):
        run = tmp_path / f"gp{weight}"
        Trainer(tiny(blobs, steps=30, lr=1e-2, grad_penalty=weight, eval_samples=0), run, generator=tiny_generator).run(progress=False)
        runs[weight] = _log_column(run, "grad_data")
    plain, held = runs[0.0], runs[1.0]
    assert plain[0] == pytest.approx(held[0], rel=0.05)  # same start: same seed and first weights
    assert np.mean(plain[-5:]) > 3 * plain[0]  # without the penalty the scale grows
    assert np.mean(held[-5:]) < np.mean(plain[-5:]) / 3


def test_the_default_hat_is_the_embedded_gans_discriminator_only_for_that_gan(tmp_path, tiny_generator, blobs):
    def resolved(**kw):  # what the resolver settles "auto" to; a named hat stays
        c = FitConfig(**kw)
        return FitConfig.default_hat(c.to_dict()) if c.hat == "auto" else c.hat

    assert resolved() == "discriminator"
    assert resolved(hat_width=8) is None  # a width asks for a hat by image size
    assert resolved(checkpoint="other.safetensors") is None  # other weights: the shipped discriminator is not theirs
    assert resolved(generator="mimicry:sngan_cifar10") is None
    assert resolved(hat="small") == "small"
    # a generator object given to the trainer decides, not the config's default spec
    config = FitConfig(data=blobs, steps=1, batch_size=8, langevin_steps=1, eval_samples=0, calibrate=False, device="cpu")
    assert Trainer(config, tmp_path / "run", generator=tiny_generator).config.hat is None


def test_a_run_saved_before_new_settings_loads_and_resumes_as_it_ran(tmp_path, tiny_generator, blobs):
    import json

    run = tmp_path / "run"
    Trainer(tiny(blobs, steps=3, eval_samples=0), run, generator=tiny_generator).run(progress=False)
    saved = json.loads((run / "config.json").read_text())
    for key in ("joint_update", "grad_penalty", "calibrate"):  # settings older runs did not have
        del saved["hatrefine"][key]
    saved["hatrefine"]["hat"] = None
    (run / "config.json").write_text(json.dumps(saved))
    (run / "sampling.json").unlink()
    old_columns = ["step", "loss", "energy_data", "energy_samples", "lr", "eps_y", "eps_z", "residual_norm", "seconds_per_step"]
    rows = [r.split(",") for r in (run / "log.csv").read_text().splitlines()]
    keep = [rows[0].index(c) for c in old_columns]
    (run / "log.csv").write_text("".join(",".join(r[i] for i in keep) + "\n" for r in rows))

    refiner = HatRefiner.from_pretrained(run, generator=tiny_generator)
    assert refiner.config.joint_update == "alternate" and refiner.config.grad_penalty == 0 and not refiner.config.calibrate
    assert refiner.sampler().joint_update == "alternate" and refiner.sampling.chosen_by == "config"
    resumed = Trainer(None, run, generator=tiny_generator, resume=True, steps=6)
    resumed.run(progress=False)
    assert resumed.config.grad_penalty == 0 and resumed.calibration is None
    lines = (run / "log.csv").read_text().splitlines()
    assert lines[0].split(",") == old_columns and len(lines) == 7 and all(len(r.split(",")) == len(old_columns) for r in lines)
