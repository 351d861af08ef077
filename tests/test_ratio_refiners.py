"""The discriminator-only refiners (DRS, MH-GAN, DOT, DGflow, and DDLS beside them) on a case
whose answer is known: a 1-D Gaussian "generator" x = 0.2 z and the exact log density ratio
of a target Gaussian as the "discriminator"."""

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hatrefine.adapters import wrap
from hatrefine.cli import main
from hatrefine.sampling.ddls import DDLS
from hatrefine.sampling.density_ratio import LogRatio
from hatrefine.sampling.ratio_refiners import DOT, DRS, MHGAN, DGflow, baseline

SCALE, MEAN, STD = 0.2, 0.1, 0.15  # p_g = N(0, 0.2^2); the target N(0.1, 0.15^2)


class ExactLogRatio(torch.nn.Module):
    """log N(x; MEAN, STD) - log N(x; 0, SCALE): what a perfect discriminator's logit would be."""

    def forward(self, x):
        x = x.reshape(len(x))
        return -((x - MEAN) ** 2) / (2 * STD**2) - math.log(STD) + x**2 / (2 * SCALE**2) + math.log(SCALE)


@pytest.fixture
def gaussian():
    return wrap(
        torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.Unflatten(1, (1, 1, 1))), latent_shape=(1,), image_shape=(1, 1, 1), name="gauss"
    )


@pytest.fixture(autouse=True)
def _scale(gaussian):
    with torch.no_grad():
        gaussian.module[0].weight.fill_(SCALE)


def moments(x):
    x = x.flatten().double()
    return x.mean().item(), x.std().item()


def near_target(x, tol=0.012):
    m, s = moments(x)
    return abs(m - MEAN) < tol and abs(s - STD) < tol


def test_the_untouched_generator_is_far_from_the_target(gaussian):
    assert not near_target(gaussian(gaussian.sample_latent(4000, generator=torch.Generator().manual_seed(0))))


def test_exact_drs_and_long_mh_chains_produce_the_target(gaussian):
    ratio = LogRatio(ExactLogRatio())
    drs = DRS(gaussian, ratio, burn_in=5000, gamma_percentile=None).sample(4000, seed=1, batch_size=1000)
    assert near_target(drs.x) and 0.3 < drs.stats["acceptance_rate"] < 0.9
    real = MEAN + STD * torch.randn(100, 1, 1, 1, generator=torch.Generator().manual_seed(2))
    for start in (None, real):
        mh = MHGAN(gaussian, ratio, n_proposals=60, real=start).sample(3000, seed=3, batch_size=1000)
        assert near_target(mh.x), moments(mh.x)
    shifted = DRS(gaussian, ratio, burn_in=5000, gamma_percentile=95).sample(4000, seed=1, batch_size=1000)
    assert abs(shifted.stats["acceptance_rate"] - drs.stats["acceptance_rate"]) > 0.1  # the paper's gamma sets the acceptance, not the ratio


def test_ddls_run_long_with_small_steps_approaches_the_target(gaussian):
    x = DDLS(gaussian, ExactLogRatio(), n_steps=400, eps=0.3).sample(3000, seed=4, batch_size=1000).x
    assert near_target(x, tol=0.015), moments(x)


def test_dgflow_is_a_short_run_refiner_that_climbs_the_ratio_without_a_prior(gaussian):
    """Its update is gradient ascent on l(G(z)) plus a little noise: a short run moves the samples
    toward the target, the authors' 25 steps here overshoot toward the ratio's mode, and a long
    run with gamma 1 settles at exp(l) on z (no prior term), not at the target."""
    ratio = LogRatio(ExactLogRatio())
    distance = lambda m: abs(m[0] - MEAN) + abs(m[1] - STD)  # noqa: E731
    before = moments(gaussian(gaussian.sample_latent(3000, generator=torch.Generator().manual_seed(5))))
    short = moments(DGflow(gaussian, ratio, n_steps=5).sample(3000, seed=5, batch_size=1000).x)
    assert distance(short) < 0.5 * distance(before)
    mode = MEAN * SCALE**2 / (SCALE**2 - STD**2)  # where l = log r peaks
    authors = moments(DGflow(gaussian, ratio).sample(3000, seed=5, batch_size=1000).x)
    assert authors[0] > MEAN + 0.05 and authors[1] < 0.5 * STD and abs(authors[0] - mode) < abs(before[0] - mode)
    long = moments(DGflow(gaussian, ratio, n_steps=1500, eta=0.05, gamma=1.0).sample(3000, seed=5, batch_size=1000).x)
    expected_std = SCALE / math.sqrt(SCALE**2 / STD**2 - 1)  # exp(l(0.2 z)) is Gaussian in z: std 1 / sqrt(0.04 (1/0.0225 - 1/0.04))
    assert abs(long[0] - mode) < 0.02 and abs(long[1] - expected_std) < 0.02 and not abs(long[1] - STD) < 0.02


def test_dot_lowers_its_objective_and_moves_each_latent_within_its_budget(gaussian):
    true_k = max(abs(SCALE * (-(x - MEAN) / STD**2 + x / SCALE**2)) for x in np.linspace(-0.8, 0.8, 161))
    estimated = DOT(gaussian, LogRatio(ExactLogRatio())).k_eff
    assert 0 < estimated <= true_k  # a max of secant slopes over random pairs: at most the Lipschitz constant where they fall
    dot = DOT(gaussian, LogRatio(ExactLogRatio()), n_steps=10, lr=0.01, k_eff=0.25 * true_k, correction="none")  # latents whose slope beats k_eff move
    res = dot.sample(500, seed=6, batch_size=250)
    z0 = gaussian.sample_latent(500, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        after, before = dot.objective(res.z, z0), dot.objective(z0, z0)
    assert after.mean() < before.mean() and (after < before - 1e-4).float().mean() > 0.5
    assert (after <= before + 2 * dot.lr).all()  # where staying put is optimal, SGD only oscillates by about lr around it
    moved = (res.z - z0).abs().flatten()
    assert (moved <= dot.n_steps * dot.lr * (1 + true_k / dot.k_eff)).all() and moved.max() > 0  # each step: lr x (1 + |grad l| / k_eff)


def test_dots_tangent_correction_keeps_a_latent_on_its_shell_where_the_authors_pushes_it_off():
    torch.manual_seed(0)
    G = wrap(
        torch.nn.Sequential(torch.nn.Linear(16, 4), torch.nn.Tanh(), torch.nn.Unflatten(1, (1, 2, 2))), latent_shape=(16,), image_shape=(1, 2, 2), name="lin"
    )
    ratio = LogRatio(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 1)))
    z0 = G.sample_latent(200, generator=torch.Generator().manual_seed(7))
    change = {}
    for correction in ("tangent", "authors"):
        dot = DOT(G, ratio, n_steps=10, lr=0.05, correction=correction)
        z = dot.sample(200, seed=7).z
        change[correction] = (z.norm(dim=1) - z0.norm(dim=1)).abs().mean().item()
        if correction == "tangent":
            with torch.no_grad():
                after, before = dot.objective(z, z0), dot.objective(z0, z0)
            assert after.mean() < before.mean() and (after < before).float().mean() > 0.5
    assert change["tangent"] < 0.2 * change["authors"]


def test_every_method_runs_from_the_cli_on_the_embedded_gan(tmp_path):
    tiny = {
        "ddls": ["--langevin-steps", 2],
        "drs": ["--burn-in", 32, "--gamma-percentile", 50],
        "mh": ["--proposals", 3],
        "dot": ["--langevin-steps", 2],
        "dgflow": ["--langevin-steps", 2],
    }
    for method, extra in tiny.items():
        out = tmp_path / f"{method}.npz"
        args = ["baseline", "--method", method, "--discriminator", "builtin:mnist", "--n", 4, "--batch-size", 8, "--calibrate-n", 40, "--out", out, *extra]
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (method, result.output)
        with np.load(out) as f:
            assert f["x"].shape == (4, 1, 32, 32) and f["z"].shape == (4, 64)
        assert f"wrote 4 {'DDLS' if method == 'ddls' else method} samples" in result.output


def test_a_discriminator_for_other_images_is_one_line(tmp_path):
    result = CliRunner().invoke(
        main, ["baseline", "--method", "dot", "--generator", "builtin:twemoji", "--discriminator", "builtin:mnist", "--out", str(tmp_path / "o.npz")]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "the discriminator fails on builtin:twemoji's 3x32x32 images" in result.output and "pass the discriminator of this GAN" in result.output
    with pytest.raises(Exception, match="unknown baseline method"):
        baseline("nope", None, None)
