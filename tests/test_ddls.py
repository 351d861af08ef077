"""DDLS: latents move toward a higher discriminator logit; calibration recovers a temperature."""

import numpy as np
import pytest
import torch
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.sampling.ddls import DDLS
from hatrefine.sampling.density_ratio import calibrate, fit_logistic


class BrightnessCritic(nn.Module):
    """A known discriminator: the logit is the mean brightness of the image times 10."""

    def forward(self, x):
        return 10 * x.flatten(1).mean(1, keepdim=True)


def test_ddls_moves_latents_toward_a_higher_logit(tiny_generator):
    G, D = tiny_generator, BrightnessCritic()
    z0 = G.sample_latent(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = D(G(z0)).mean()
    sampler = DDLS(G, D, n_steps=30, eps=0.1, temperature=0.01)
    res = sampler.sampler.sample(z0, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        after = D(G(res.z)).mean()
    assert torch.allclose(res.x, G(res.z), atol=1e-6)  # samples are G(z) at the last step: no residual
    assert after > before + 0.5, (before, after)
    # a weak discriminator (high temperature) leaves the prior in charge: the logit barely moves
    res_hot = DDLS(G, D, n_steps=30, eps=0.1, temperature=1e4).sampler.sample(z0, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert abs(D(G(res_hot.z)).mean() - before) < (after - before) / 3


def test_ddls_samples_are_reproducible_by_seed(tiny_generator):
    ddls = DDLS(tiny_generator, BrightnessCritic(), n_steps=3)
    a, b = ddls.sample(10, seed=4, batch_size=4), ddls.sample(10, seed=4, batch_size=4)
    assert torch.equal(a.x, b.x) and a.x.shape == (10, 1, 8, 8)
    assert not torch.equal(a.x, ddls.sample(10, seed=5, batch_size=4).x)


def test_calibration_recovers_a_known_temperature():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20000, generator=g) * 3
    for temperature, bias in ((0.5, 0.3), (2.0, -1.0)):
        labels = torch.bernoulli(torch.sigmoid(logits / temperature + bias), generator=g)
        cal = fit_logistic(logits, labels)
        assert cal.temperature == pytest.approx(temperature, rel=0.08)
        assert cal.bias == pytest.approx(bias, abs=0.1)


def test_calibrate_on_images_separates_real_from_generated(tiny_generator):
    """Real images are bright, generated ones are not: the fitted scale is positive and sharp."""
    G, D = tiny_generator, BrightnessCritic()
    real = torch.full((200, 1, 8, 8), 0.8) + 0.05 * torch.randn(200, 1, 8, 8)
    cal = calibrate(G, D, real.clamp(-1, 1))
    assert cal.scale > 1.0 and np.isfinite(cal.bias)


def test_calibration_rejects_one_class():
    with pytest.raises(HatrefineError, match="both real"):
        fit_logistic(torch.randn(10), torch.ones(10))


def test_ddls_needs_a_prior(tiny_generator):
    from hatrefine.adapters import wrap

    no_prior = wrap(tiny_generator.module, latent_shape=(8,), image_shape=(1, 8, 8), prior=None, name="ae")
    with pytest.raises(HatrefineError, match="prior"):
        DDLS(no_prior, BrightnessCritic())
