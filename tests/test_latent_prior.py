"""The latent-space EBM prior (fit-prior) and the multi-layer joint prior (hierarchical)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from hatrefine.adapters import wrap
from hatrefine.errors import HatrefineError
from hatrefine.models.latent_prior import LatentPriorRefiner
from hatrefine.networks.hierarchical import MIN_STD, HierarchicalGenerator
from hatrefine.networks.latent_energy import LatentEnergy
from hatrefine.settings.prior import HierarchicalConfig, PriorConfig
from hatrefine.training.prior_trainer import PriorTrainer

from .test_cli import one_line_error, run


class Linear(nn.Module):
    """G(z) = scale * z laid out as a (1, 2, 2) image."""

    def __init__(self, scale: float = 0.5):
        super().__init__()
        self.scale = scale

    def forward(self, z):
        return self.scale * z.view(-1, 1, 2, 2)


def linear_model(scale: float = 0.5, depth: int = 0, **config) -> LatentPriorRefiner:
    G = wrap(Linear(scale), latent_shape=(4,), image_shape=(1, 2, 2), value_range=None, name="linear")
    energy = LatentEnergy([4], width=8, depth=depth)
    nn.init.zeros_(energy.terms[0][-1].weight), nn.init.zeros_(energy.terms[0][-1].bias)  # f = 0
    return LatentPriorRefiner(G, energy, PriorConfig(**config))


def stationary_variance(s: float) -> float:
    """Variance the discretised chain z <- (1 - s^2/2) z + s N(0, 1) settles at on N(0, 1): 1 / (1 - s^2 / 4)."""
    return 1.0 / (1.0 - s * s / 4)


def test_with_f_zero_the_prior_chain_reproduces_the_standard_normal():
    m = linear_model()
    z, _ = m.sampler(300, 0.4).chain.sample(torch.randn(4000, 4) * 3, m.prior_energy, torch.Generator().manual_seed(0))
    assert z.mean(0).abs().max() < 0.06
    assert torch.allclose(z.var(0), torch.full((4,), stationary_variance(0.4)), atol=0.07)
    assert z.var(0).mean() > 1.02  # the discretisation correction is measured, not assumed away


def test_with_a_linear_f_the_prior_chain_reproduces_the_shifted_gaussian():
    m = linear_model()
    shift = torch.tensor([1.5, -1.0, 0.0, 0.5])
    with torch.no_grad():
        m.energy.terms[0][-1].weight.copy_(shift[None])  # f(z) = shift . z: exp(f) N(0, I) = N(shift, I) up to a constant
    z, _ = m.sampler(300, 0.4).chain.sample(torch.randn(4000, 4), m.prior_energy, torch.Generator().manual_seed(1))
    assert torch.allclose(z.mean(0), shift, atol=0.06)
    assert torch.allclose(z.var(0), torch.full((4,), stationary_variance(0.4)), atol=0.07)


def test_with_a_linear_generator_the_posterior_chain_reaches_the_closed_form_posterior():
    m = linear_model(scale=0.5, sigma=0.3, posterior_step_size=0.1)
    z_true = torch.tensor([[1.0, -0.5, 0.3, 2.0]])
    x = m.generator(z_true).expand(3000, 1, 2, 2)
    precision = 0.25 / 0.09 + 1.0  # W^T W / sigma^2 + I with W = 0.5 I
    mean = (0.5 / 0.09) * (0.5 * z_true[0]) / precision
    z = m.infer(x, n_steps=800, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    h = 0.1**2 / 2 * precision  # the discretised chain's variance: s^2 / (1 - (1 - h)^2), about 1 / precision
    assert torch.allclose(z.var(0), torch.full((4,), 0.1**2 / (1 - (1 - h) ** 2)), rtol=0.08)


def test_on_the_embedded_gan_posterior_chains_reconstruct_real_digits_better_than_the_prior():
    from hatrefine.data import load_images
    from hatrefine.networks.registry import load_generator

    G = load_generator("builtin:mnist")
    m = LatentPriorRefiner(G, LatentEnergy([64], 32, 1), PriorConfig())
    x = load_images("builtin:mnist", G.image_shape, split="test", limit=32)
    z0 = G.sample_latent(32, generator=torch.Generator().manual_seed(0))
    z = m.infer(x, z0, n_steps=20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, after = (x - G(z0)).square().mean().item(), (x - G(z)).square().mean().item()
    assert after < 0.7 * before


def test_a_prior_chain_never_runs_the_generator_and_sampling_leaves_no_gradients():
    m = linear_model(depth=1)
    calls = []
    m.generator.module.register_forward_hook(lambda *a: calls.append(1))
    m.sampler(10, 0.4).chain.sample(torch.randn(5, 4), m.prior_energy)
    assert calls == []
    res = m.sample(5, batch_size=5)  # the chain, then G once on the end latents
    assert len(calls) == 1 and res.x.shape == (5, 1, 2, 2) and torch.equal(res.x, m.generator(res.z))
    m.infer(res.x, n_steps=3)
    assert all(p.grad is None for p in m.energy.parameters())
    assert all(p.requires_grad for p in m.energy.parameters())  # restored after the chains


def test_the_learning_signal_moves_prior_samples_toward_the_datas_latent_shift(tmp_path):
    """Data x = G(z*) with z* ~ N(shift, 0.3^2 I): fitting f moves the learned prior's samples toward shift."""
    shift = torch.tensor([1.2, 0.0, -0.8, 0.0])
    z_star = shift + 0.3 * torch.randn(512, 4, generator=torch.Generator().manual_seed(0))
    np.savez(tmp_path / "data.npz", x=(0.5 * z_star).view(-1, 1, 2, 2).numpy())
    G = wrap(Linear(0.5), latent_shape=(4,), image_shape=(1, 2, 2), value_range=None, name="linear")
    settings = dict(
        data=str(tmp_path / "data.npz"),
        energy_width=16,
        energy_depth=0,
        lr=0.05,
        adam_beta1=0.9,
        steps=100,
        posterior_step_size=0.3,
        batch_size=64,
        prior_steps=40,
        posterior_steps=40,
        eval_samples=0,
        save_every=100,
        device="cpu",
    )
    trainer = PriorTrainer(PriorConfig(**settings), tmp_path / "run", generator=G)
    nn.init.zeros_(trainer.energy.terms[0][-1].weight)  # start from f = 0: the prior is N(0, I)
    before = trainer.model.sample(2000, batch_size=2000).z.mean(0)
    trainer.run(progress=False)
    after = trainer.model.sample(2000, batch_size=2000).z.mean(0)
    assert before.abs().max() < 0.1
    assert (after - shift).norm() < 0.2 * (before - shift).norm(), (before, after)


def test_the_multi_layer_prior_with_f_zero_reproduces_the_known_joint_covariance():
    a, b = 0.8, 0.6  # z2 ~ N(0, 1), z1 | z2 ~ N(a z2, b^2): Var z1 = a^2 + b^2, Cov(z1, z2) = a
    net = HierarchicalGenerator([1, 1], width=4, depth=0, image_width=4)
    with torch.no_grad():
        net.conditionals[0][-1].weight.copy_(torch.tensor([[a], [0.0]]))
        net.conditionals[0][-1].bias.copy_(torch.tensor([0.0, math.log(b - MIN_STD)]))
    G = wrap(net, latent_shape=(2,), image_shape=(1, 32, 32), value_range=None, name="two layers")
    energy = LatentEnergy([1, 1], width=4, depth=1)
    for term in energy.terms:
        nn.init.zeros_(term[-1].weight), nn.init.zeros_(term[-1].bias)
    m = LatentPriorRefiner(G, energy, PriorConfig())
    eps, _ = m.sampler(300, 0.3).chain.sample(torch.randn(6000, 2), m.prior_energy, torch.Generator().manual_seed(3))
    z1, z2 = net.latent_layers(eps)
    cov = torch.cov(torch.cat([z1, z2], 1).T)
    c = stationary_variance(0.3)
    assert torch.allclose(cov, c * torch.tensor([[a * a + b * b, a], [a, 1.0]]), atol=0.06)


def _tiny(tmp_path, **extra):
    return dict(steps=6, batch_size=16, prior_steps=5, posterior_steps=3, energy_width=16, save_every=3, log_every=1, eval_samples=0, device="cpu") | extra


def test_resume_is_exact(tmp_path):
    from hatrefine.files.checkpoint import read_state_dict

    straight = PriorTrainer(PriorConfig(**_tiny(tmp_path, posterior_init="persistent")), tmp_path / "a")
    straight.run(progress=False)
    PriorTrainer(PriorConfig(**_tiny(tmp_path, posterior_init="persistent", steps=3)), tmp_path / "b").run(progress=False)
    resumed = PriorTrainer(None, tmp_path / "b", resume=True, steps=6)
    assert resumed.step == 3
    resumed.run(progress=False)
    a, b = read_state_dict(tmp_path / "a" / "prior.safetensors"), read_state_dict(tmp_path / "b" / "prior.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(straight.chains, resumed.chains)
    rows = lambda p: [line.split(",")[:-1] for line in (p / "log.csv").read_text().splitlines()]  # noqa: E731  (seconds differ)
    assert rows(tmp_path / "a") == rows(tmp_path / "b") and len(rows(tmp_path / "a")) == 7


def test_a_non_finite_energy_rolls_back_with_a_smaller_learning_rate(tmp_path, monkeypatch):
    trainer = PriorTrainer(PriorConfig(**_tiny(tmp_path)), tmp_path / "run")
    forward, calls_at_3 = LatentEnergy.forward, []

    def poisoned(self, layers):
        out = forward(self, layers)
        calls_at_3.extend([1] if trainer.step == 3 else [])
        return out * float("nan") if len(calls_at_3) == 8 and trainer.step == 3 else out  # once, within step 4 (after step 3's grid: 5 calls)

    monkeypatch.setattr(LatentEnergy, "forward", poisoned)
    trainer.run(progress=False)
    assert trainer.step == 6 and len(trainer.rollbacks) == 1
    assert trainer.rollbacks[0]["resumed_from"] == 3 and trainer.opt.param_groups[0]["lr"] == pytest.approx(2e-5 * 0.5)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_fit_prior_and_every_command_on_its_run(tmp_path):
    out = tmp_path / "prior"
    r = run(
        "fit-prior",
        "--out",
        out,
        "--steps",
        2,
        "--batch-size",
        8,
        "--prior-steps",
        3,
        "--posterior-steps",
        2,
        "--eval-samples",
        40,
        "--save-every",
        2,
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    assert "latent EBM prior" in r.output and (out / "before_after.png").is_file() and (out / "prior.safetensors").is_file()
    assert run("sample", "--run", out, "--n", 6, "--out", tmp_path / "s.npz").exit_code == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["x"].shape == (6, 1, 32, 32) and f["z"].shape == (6, 64)
    assert run("refine", "--run", out, "--input", tmp_path / "s.npz", "--out", tmp_path / "r.npz", "--langevin-steps", 2).exit_code == 0
    r = run("ood", "--run", out, "--in-data", "builtin:mnist", "--ood-data", "noise:gaussian", "--n", 20, "--plot", tmp_path / "o.png")
    assert r.exit_code == 0 and "AUROC" in r.output, r.output
    one_line_error(run("sample", "--run", out, "--n", 2, "--out", tmp_path / "t.npz", "--temperature", 0.5), "apply only to Hat EBM runs")
    one_line_error(run("calibrate", "--run", out), "is a latent-prior run")
    one_line_error(run("fit-prior", "--out", out, "--resume", "--sigma", 0.5), "cannot change on --resume")
    from hatrefine.models.hub import stage
    from hatrefine.models.runs import load_run

    folder = stage(out, tmp_path / "staged")
    assert (folder / "prior.safetensors").is_file() and "Latent-space EBM prior" in (folder / "README.md").read_text()
    assert isinstance(load_run(folder), LatentPriorRefiner)


def test_hierarchical_saves_a_generator_every_command_uses(tmp_path):
    out = tmp_path / "h"
    r = run(
        "hierarchical",
        "--out",
        out,
        "--steps",
        2,
        "--batch-size",
        8,
        "--latent-sizes",
        "8,4",
        "--conditional-width",
        16,
        "--image-width",
        8,
        "--prior-steps",
        3,
        "--posterior-steps",
        2,
        "--eval-samples",
        0,
        "--save-every",
        2,
        "--energy-layers",
        "2x8,1x4",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    prior = LatentPriorRefiner.from_pretrained(out)  # each latent layer's energy at its own depth and width
    assert [[m.out_features for m in f if isinstance(m, torch.nn.Linear)] for f in prior.energy.terms] == [[8, 8, 1], [4, 1]]
    assert run("sample", "--run", out, "--n", 4, "--out", tmp_path / "s.npz").exit_code == 0  # with its EBM prior
    r = run("generate", "--generator", f"dir:{out}", "--n", 4, "--out", tmp_path / "g.npz")  # the generator alone
    assert r.exit_code == 0, r.output
    r = run(
        "fit",
        "--generator",
        f"dir:{out}",
        "--hat",
        "small",
        "--hat-width",
        8,
        "--steps",
        2,
        "--batch-size",
        8,
        "--langevin-steps",
        2,
        "--eval-samples",
        0,
        "--no-calibrate",
        "--out",
        tmp_path / "hat",
        "--quiet",
    )
    assert r.exit_code == 0, r.output  # a Hat EBM on the learned generator
    one_line_error(run("hierarchical", "--out", tmp_path / "bad", "--latent-sizes", "8,x"), "--latent-sizes must be positive sizes")
    one_line_error(run("hierarchical", "--out", tmp_path / "bad", "--energy-layers", "2x8"), "names 1 layers; the generator's latent has 2")
    one_line_error(run("hierarchical", "--out", tmp_path / "bad", "--energy-layers", "2-8"), "is not DEPTHxWIDTH per layer")


def test_the_cifar10_hierarchical_recipe_is_cui_et_al_s_setting():
    from hatrefine.training.resolve import resolve

    c = resolve(HierarchicalConfig, {"recipe": "cifar10-hierarchical", "image_width": 32}).config
    assert (c.latent_sizes, c.energy_layers, c.conditional_width, c.channels, c.data) == ("128,100", "3x200,2x100", 200, 3, "cifar10")
    assert (c.prior_steps, c.prior_step_size, c.posterior_steps, c.posterior_step_size, c.sigma) == (60, 0.4, 40, 0.1, 0.3)
    assert (c.lr, c.generator_lr, c.batch_size, c.image_width) == (2e-5, 1e-4, 100, 32)  # an option given wins


def test_bad_settings_are_one_line_errors(tmp_path):
    one_line_error(run("fit-prior", "--out", tmp_path / "a", "--sigma", 0), "--sigma must be positive")
    with pytest.raises(HatrefineError, match="unknown --posterior-init"):
        PriorConfig(posterior_init="warm")
