"""Langevin samplers: correct stationary law, energies fall, frozen parameters, flat memory."""

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from hatrefine import HatrefineError
from hatrefine.adapters import autoencoder_decoder, wrap
from hatrefine.networks.hat import create_hat
from hatrefine.sampling.energy import HatEnergy
from hatrefine.sampling.langevin import (
    LangevinSampler,
)
from hatrefine.settings.config import Schedule


class Quadratic(nn.Module):
    """H(x) = ||x - mu||^2 / (2 s^2): a Gaussian N(mu, s^2 T) in x at temperature T."""

    def __init__(self, mu: float, s: float):
        super().__init__()
        self.mu, self.s = nn.Parameter(torch.tensor(mu)), s

    def forward(self, x):
        return (x - self.mu).flatten(1).square().sum(1) / (2 * self.s**2)


def identity_generator():
    return wrap(nn.Identity(), latent_shape=(1, 2, 2), image_shape=(1, 2, 2), value_range=None, name="identity")


def test_conditional_langevin_reaches_the_gaussian_law():
    torch.manual_seed(0)
    mu, s, T, eps = 0.5, 1.0, 0.25, 0.3
    energy = HatEnergy(Quadratic(mu, s), identity_generator(), temperature=T)
    sampler = LangevinSampler(energy, n_steps=600, eps_y=eps, y_clip=None)
    z = torch.full((4000, 1, 2, 2), -0.3)
    out = sampler.sample(z, generator=torch.Generator().manual_seed(1))
    # y | z ~ N(mu - g, s^2 T); unadjusted Langevin inflates the variance by 1 / (1 - a / 2), a = eps^2 / (2 s^2 T)
    var = s**2 * T / (1 - eps**2 / (4 * s**2 * T))
    assert out.y.mean().item() == pytest.approx(mu + 0.3, abs=0.02)
    assert out.y.var().item() == pytest.approx(var, rel=0.04)
    assert torch.equal(out.x, out.g + out.y) and torch.equal(out.g, z)


@pytest.mark.parametrize("joint_update", ["alternate", "simultaneous"])
def test_joint_langevin_reaches_the_gaussian_law(joint_update):
    """U = ||z + y - mu||^2 / (2 s^2) + ||z||^2 / 2 + ||y||^2 / (2 sy^2): a 2-d Gaussian per pixel."""
    torch.manual_seed(0)
    mu, s, sy = 1.0, 0.5, 0.7
    energy = HatEnergy(Quadratic(mu, s), identity_generator(), temperature=1.0, z_prior_weight=1.0, y_sigma=sy)
    sampler = LangevinSampler(energy, n_steps=800, eps_z=0.1, eps_y=0.1, y_clip=None, joint_update=joint_update)
    out = sampler.sample(torch.randn(4000, 1, 2, 2), generator=torch.Generator().manual_seed(2))
    prec = torch.tensor([[1 / s**2 + 1, 1 / s**2], [1 / s**2, 1 / s**2 + 1 / sy**2]], dtype=torch.float64)
    cov = torch.linalg.inv(prec)
    mean = cov @ torch.tensor([mu / s**2, mu / s**2], dtype=torch.float64)
    assert out.z.mean().item() == pytest.approx(mean[0].item(), abs=0.03)
    assert out.y.mean().item() == pytest.approx(mean[1].item(), abs=0.03)
    assert out.z.var().item() == pytest.approx(cov[0, 0].item(), rel=0.08)
    assert out.y.var().item() == pytest.approx(cov[1, 1].item(), rel=0.08)


@pytest.mark.parametrize("mode", ["joint", "conditional"])
def test_samplers_lower_the_energy(tiny_generator, mode):
    torch.manual_seed(0)
    hat = create_hat("small", (1, 8, 8), width=8)
    energy = HatEnergy(hat, tiny_generator, temperature=1e-2)
    sampler = LangevinSampler(energy, n_steps=20, eps_y=2e-2, **({"eps_z": 5e-2} if mode == "joint" else {}), noise=0.1)
    z = tiny_generator.sample_latent(64)
    start = energy(torch.zeros(64, 1, 8, 8), tiny_generator(z), z).mean()
    out = sampler.sample(z, record_energy=True)
    end = energy(out.y, out.g, out.z).mean()
    assert end < start
    assert out.energies.shape == (20,) and out.energies[-5:].mean() < out.energies[:5].mean()
    if mode == "conditional":
        assert torch.equal(out.z, z)


def test_parameters_get_no_gradients_while_sampling(tiny_generator):
    hat = create_hat("small", (1, 8, 8), width=8)
    seen = []
    hat.register_forward_hook(lambda m, i, o: seen.append(any(p.requires_grad for p in m.parameters())))
    sampler = LangevinSampler(HatEnergy(hat, tiny_generator, 1e-2), n_steps=5, eps_y=1e-4, eps_z=5e-3)
    sampler.sample(tiny_generator.sample_latent(4))
    assert seen and not any(seen)
    assert all(p.grad is None for p in hat.parameters())
    assert all(p.requires_grad for p in hat.parameters())  # restored for training


def test_generator_runs_once_per_chain_in_conditional_mode_and_once_per_step_in_joint(tiny_generator):
    calls = []
    tiny_generator.module.register_forward_hook(lambda *a: calls.append(1))
    energy = HatEnergy(create_hat("small", (1, 8, 8), width=8), tiny_generator, 1e-2)
    LangevinSampler(energy, n_steps=10, eps_y=1e-4).sample(tiny_generator.sample_latent(4))
    assert len(calls) == 1
    calls.clear()
    LangevinSampler(energy, n_steps=10, eps_y=1e-4, eps_z=5e-3).sample(tiny_generator.sample_latent(4))
    assert len(calls) == 11  # one per step, plus the starting G(z0)


class Linear(nn.Module):
    """H(x) = <a, x>: its gradient is the same everywhere."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(-1, 1, 4).view(1, 1, 2, 2))

    def forward(self, x):
        return (x * self.a).flatten(1).sum(1)


def test_simultaneous_update_runs_the_hat_once_per_step_and_matches_alternate_on_a_constant_gradient():
    runs = {}
    for hat in (Linear(), Quadratic(0.5, 1.0)):
        passes = []
        hat.register_forward_hook(lambda *a: passes.append(1))
        energy = HatEnergy(hat, identity_generator(), temperature=0.5)
        for order in ("alternate", "simultaneous"):
            passes.clear()
            out = LangevinSampler(energy, n_steps=10, eps_z=0.3, eps_y=0.2, y_clip=None, joint_update=order).sample(
                torch.zeros(16, 1, 2, 2), generator=torch.Generator().manual_seed(0)
            )
            assert len(passes) == {"alternate": 20, "simultaneous": 10}[order]
            runs[type(hat).__name__, order] = out
    # a constant gradient makes the order irrelevant: the same draws give the same chains
    torch.testing.assert_close(runs["Linear", "simultaneous"].x, runs["Linear", "alternate"].x)
    # otherwise the Y update sees the old Z (its gradient depends on z + y here)
    assert not torch.allclose(runs["Quadratic", "simultaneous"].y, runs["Quadratic", "alternate"].y)


def test_y_step_is_clipped_per_sample(tiny_generator):
    energy = HatEnergy(create_hat("small", (1, 8, 8), width=8), tiny_generator, temperature=1e-6)
    out = LangevinSampler(energy, n_steps=1, eps_y=1.0, noise=0.0, y_clip=0.5).sample(tiny_generator.sample_latent(3))
    norms = out.y.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), 0.5))


def test_path_frames(tiny_generator):
    energy = HatEnergy(create_hat("small", (1, 8, 8), width=8), tiny_generator, 1e-2)
    out = LangevinSampler(energy, n_steps=10, eps_y=1e-4, eps_z=5e-3).sample(tiny_generator.sample_latent(5), path_frames=4, path_chains=2)
    assert out.path["x"].shape == (4, 2, 1, 8, 8)
    torch.testing.assert_close(out.path["x"][-1], out.x[:2])
    assert torch.equal(out.path["y"][0], torch.zeros(2, 1, 8, 8))


def test_schedules():
    assert Schedule()(5, 10) == 1.0
    assert Schedule("linear", 0.1)(0, 10) == 1.0 and Schedule("linear", 0.1)(9, 10) == pytest.approx(0.1)
    assert Schedule("cosine", 0.0)(9, 10) == pytest.approx(0.0, abs=1e-12)
    assert Schedule("exponential", 0.01)(9, 10) == pytest.approx(0.01)
    with pytest.raises(HatrefineError, match="unknown schedule 'step'"):
        Schedule("step")


def test_conditional_mode_refused_without_prior():
    from hatrefine.models.refiner import HatRefiner
    from hatrefine.settings.config import FitConfig

    g = autoencoder_decoder(nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Unflatten(1, (1, 8, 8))), (4,), (1, 8, 8))
    with pytest.raises(HatrefineError, match="no latent prior, so --mode conditional does not apply; use --mode joint"):
        HatRefiner(g, create_hat("small", (1, 8, 8), width=8), FitConfig(mode="conditional"))


def test_bad_sampler_settings(tiny_generator):
    energy = HatEnergy(create_hat("small", (1, 8, 8), width=8), tiny_generator, 1.0)
    with pytest.raises(HatrefineError, match="eps_y must be >= 0"):
        LangevinSampler(energy, 3, eps_y=-1.0)
    with pytest.raises(HatrefineError, match="unknown joint update 'together'; use alternate or simultaneous"):
        LangevinSampler(energy, 3, joint_update="together")
    with pytest.raises(HatrefineError, match="temperature must be positive"):
        HatEnergy(create_hat("small", (1, 8, 8)), tiny_generator, 0.0)


PEAK_RSS = textwrap.dedent(
    """
    import resource, sys, torch
    from hatrefine.adapters import wrap
    from hatrefine.sampling.energy import HatEnergy
    from hatrefine.networks.hat import create_hat
    from hatrefine.sampling.langevin import LangevinSampler
    torch.manual_seed(0)
    G = wrap(torch.nn.Sequential(torch.nn.Linear(16, 1024), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 32, 32))), (16,), (1, 32, 32))
    sampler = LangevinSampler(HatEnergy(create_hat("small", (1, 32, 32), width=64), G, 1e-3), n_steps=int(sys.argv[1]), eps_y=1e-4, eps_z=5e-3)
    sampler.sample(G.sample_latent(128))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # MiB
    """
)


@pytest.mark.slow
def test_peak_memory_is_flat_in_the_number_of_steps():
    """A graph kept across steps would add ~50 MiB per step here; we allow 60 MiB in total."""

    def peak(k: int) -> int:
        out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(k)], capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    assert peak(40) - peak(4) < 60


def test_test_time_residual_prior_and_initial_scale_apply_to_sampling_only(tiny_generator):
    """--y-sigma-test and --init-scale-res (the authors' FID-time tau_res and init_scale_res) shape sampling, never training chains."""
    from hatrefine.models.refiner import HatRefiner
    from hatrefine.settings.config import FitConfig

    config = FitConfig(hat="small", hat_width=8, y_sigma=1.0, y_sigma_test=0.25, init_scale_res=0.3, langevin_steps=0)
    refiner = HatRefiner(tiny_generator, create_hat("small", (1, 8, 8), width=8), config)
    test, train = refiner.sampler(), refiner.sampler(training=True)
    assert test.energy.y_sigma == 0.25 and train.energy.y_sigma == 1.0
    assert test.init_scale_res == 0.3 and train.init_scale_res == 0.0
    y = refiner.sample(200, batch_size=200).y  # K 0: the chains' starting residuals
    assert y.std().item() == pytest.approx(0.3, rel=0.05)
    assert (
        FitConfig(hat="small").init_scale_res == 0.0
        and (HatRefiner(tiny_generator, refiner.hat, FitConfig(hat="small", langevin_steps=0)).sample(8).y == 0).all()
    )


def test_a_held_class_stays_as_drawn_in_every_chain_and_inversion():
    """Generator(classes=3): the one-hot tail of each latent is drawn uniformly and never moves;
    the rest of the latent does (Hat EBM chains of both updates, DDLS-style Z chains, latent
    Langevin, inversion)."""
    from hatrefine.models.latent_prior import LatentLangevin
    from hatrefine.models.refiner import invert_latents

    torch.manual_seed(0)
    G = wrap(nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Unflatten(1, (1, 2, 2))), latent_shape=(5,), image_shape=(1, 2, 2), name="toy", classes=3)
    z0 = G.sample_latent(600, generator=torch.Generator().manual_seed(0))
    onehot = z0[:, 2:]
    assert torch.equal(onehot.sum(1), torch.ones(600)) and set(onehot.argmax(1).tolist()) == {0, 1, 2}
    assert onehot.argmax(1).bincount().min() > 150  # uniform classes
    assert G.latent_mask.tolist() == [1, 1, 0, 0, 0]
    energy = HatEnergy(Quadratic(0.3, 0.5), G, temperature=1.0, z_prior_weight=1.0)
    for joint_update in ("alternate", "simultaneous"):
        out = LangevinSampler(energy, n_steps=5, eps_z=0.3, eps_y=0.1, joint_update=joint_update).sample(z0, generator=torch.Generator().manual_seed(1))
        assert torch.equal(out.z[:, 2:], onehot) and (out.z[:, :2] - z0[:, :2]).abs().min() > 0
    z = LatentLangevin(5, 0.3, mask=G.latent_mask).sample(z0, lambda v: v.square().sum(1) / 2, torch.Generator().manual_seed(2))[0]
    assert torch.equal(z[:, 2:], onehot) and (z[:, :2] - z0[:, :2]).abs().min() > 0
    z = invert_latents(G, torch.zeros(600, 1, 2, 2), steps=5, seed=0)
    assert torch.equal(z[:, 2:], onehot) and (z[:, :2] - z0[:, :2]).abs().min() > 0  # (seed 0: the same draw as z0)
    with pytest.raises(HatrefineError, match="one-hot classes need a 1-D latent longer than that"):
        wrap(nn.Identity(), latent_shape=(1, 2, 2), image_shape=(1, 2, 2), classes=2)


def test_the_public_step_is_the_update_rule_of_every_sampler():
    from hatrefine.sampling.langevin import LatentLangevin, langevin_step

    v, grad = torch.zeros(3, 4), torch.ones(3, 4)
    torch.testing.assert_close(langevin_step(v, grad, eps=0.5, noise=0.0), torch.full((3, 4), -0.125))  # -(eps^2 / 2) grad
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    moved = langevin_step(v, grad, 0.5, 1.0, torch.Generator().manual_seed(0), mask=mask)
    assert torch.equal(moved[:, 2:], v[:, 2:]) and not torch.equal(moved[:, :2], v[:, :2])
    torch.testing.assert_close(langevin_step(v, 100 * grad, 1.0, 0.0, clip=0.5).norm(dim=1), torch.full((3,), 0.5))
    drift = []
    langevin_step(v, grad, 0.5, 1.0, torch.Generator().manual_seed(0), drift=drift)
    assert len(drift) == 1 and drift[0] > 0

    energy = lambda z: z.square().sum(1) / 2  # noqa: E731
    z0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    chain, _ = LatentLangevin(4, 0.3).sample(z0, energy, torch.Generator().manual_seed(2))
    z, rng = z0, torch.Generator().manual_seed(2)
    for _ in range(4):  # the same chain by hand: the gradient of ||z||^2 / 2 is z
        z = langevin_step(z, z, 0.3, 1.0, rng)
    torch.testing.assert_close(chain, z)
