"""Hat networks: one scalar per image for every architecture and size."""

import pytest
import torch

from hatrefine import HatrefineError
from hatrefine.networks.hat import create_hat, default_hat, hat_from_discriminator
from hatrefine.networks.resblocks import ResNetDiscriminator
from hatrefine.sampling.energy import HatEnergy
from hatrefine.sampling.langevin import LangevinSampler


@pytest.mark.parametrize(
    "name, shape, width",
    [
        ("small", (1, 32, 32), 8),
        ("sngan32", (3, 32, 32), 16),
        ("sngan64", (3, 64, 64), 64),
        ("sngan128", (3, 128, 128), 64),
        ("timm:resnet18", (1, 32, 32), None),
    ],
)
def test_hat_maps_images_to_one_scalar(name, shape, width):
    hat = create_hat(name, shape, width)
    x = torch.randn(2, *shape, requires_grad=True)
    out = hat(x)
    assert out.shape in ((2, 1), (2,))
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.abs().sum() > 0  # an input gradient, which Langevin needs


def test_sngan_hats_have_no_spectral_norm_and_a_bias_free_head():
    hat = create_hat("sngan32", (3, 32, 32), 16)
    keys = hat.state_dict().keys()
    assert not any("weight_orig" in k for k in keys)
    assert "l5.weight" in keys and "l5.bias" not in keys


def test_hat_from_a_spectral_norm_discriminator_starts_as_its_negated_logit_and_trains():
    d = ResNetDiscriminator(3, 16, [(16, True), (16, False)], spectral_norm=True, pool="sum")  # Mimicry's hook-based SN
    d.train()
    for _ in range(3):  # power iterations move u and v away from their init
        d(torch.randn(2, 3, 32, 32))
    x = torch.randn(4, 3, 32, 32)
    logit = d.eval()(x).flatten().detach()
    hat = hat_from_discriminator(d)
    assert torch.allclose(hat(x), -logit, atol=1e-5)
    assert hat(x).shape == (4,) and hat.training
    assert not any("weight_orig" in k or "weight_u" in k for k in hat.state_dict())
    params = list(hat.parameters())
    assert params and all(p.requires_grad for p in params)
    hat(x).sum().backward()  # trainable: a gradient reaches every weight
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params if p.dim() > 1)


def test_hat_errors():
    with pytest.raises(HatrefineError, match="hat sngan64 is for 64x64 images, got 32x32; use --hat sngan32"):
        create_hat("sngan64", (3, 32, 32))
    with pytest.raises(HatrefineError, match="unknown hat network 'huge'"):
        create_hat("huge", (3, 32, 32))
    with pytest.raises(HatrefineError, match="timm has no model"):
        create_hat("timm:not_a_model", (3, 32, 32))
    assert default_hat((1, 32, 32)) == "small" and default_hat((3, 64, 64)) == "sngan64"


@pytest.mark.parametrize(
    "shape", [(3, 16, 16), (1, 16, 16), (3, 48, 48), (1, 28, 28), (3, 24, 40), (1, 8, 8), (4, 96, 96), (1, 64, 64), (1, 4, 4), (3, 1, 1), (2, 3, 7)]
)
def test_the_default_hat_fits_every_shape_and_every_suggestion_fits(shape):
    """A custom 16x16 decoder used to get sngan32 and then advice naming sngan32 again (issue 31)."""
    hat = create_hat(default_hat(shape), shape, 16)
    assert hat(torch.randn(2, *shape)).shape in ((2,), (2, 1))
    if default_hat(shape) == "small" and min(shape[1:]) >= 8:  # the layout saved runs of these sizes were written with
        assert [type(m).__name__ for m in hat.net] == ["Conv2d", "LeakyReLU"] * 4 + ["Flatten", "Linear"]
    for name in ("sngan32", "sngan64", "sngan128"):
        if (shape[1], shape[2]) != (int(name[5:]),) * 2:
            with pytest.raises(HatrefineError) as e:
                create_hat(name, shape, 16)
            suggested = str(e.value).split("use --hat ")[1].split()[0]
            assert create_hat(suggested, shape, 16)(torch.randn(1, *shape)).numel() == 1


def test_mixed_precision_switch_runs_and_stays_close(tiny_generator):
    hat = create_hat("small", (1, 8, 8), width=8)
    energy = HatEnergy(hat, tiny_generator, temperature=1e-2)
    z = tiny_generator.sample_latent(4)
    full = LangevinSampler(energy, 3, noise=0.0, eps_y=1e-4, eps_z=5e-3).sample(z)
    half = LangevinSampler(energy, 3, noise=0.0, eps_y=1e-4, eps_z=5e-3, amp=True).sample(z)
    assert half.x.dtype == torch.float32
    torch.testing.assert_close(half.x, full.x, atol=2e-2, rtol=0)


def test_the_authors_block_feeds_the_raw_input_to_the_shortcut():
    """Hand-computed: 1 channel, centre-only 3x3 kernels (a for c1, b for c2), 1x1 shortcut s, no biases, downsampling."""
    from hatrefine.networks.resblocks import DBlock

    a, b, s = 2.0, 3.0, 0.5
    x = torch.tensor([[[[-1.0, 2.0], [4.0, -3.0]]]])
    for shortcut_relu, shortcut in ((False, s * x.mean()), (True, s * x.clamp(min=0).mean())):
        block = DBlock(1, 1, downsample=True, spectral_norm=False, shortcut_relu=shortcut_relu)
        with torch.no_grad():
            for conv, w in ((block.c1, a), (block.c2, b), (block.c_sc, s)):
                conv.weight.zero_()
                conv.weight[0, 0, conv.kernel_size[0] // 2, conv.kernel_size[1] // 2] = w
                conv.bias.zero_()
        residual = (b * (a * x.clamp(min=0)).clamp(min=0)).mean()  # c2(relu(c1(relu x))), then the 2x2 mean pool
        assert block(x).item() == pytest.approx((residual + shortcut).item())  # authors: mean(x) = 0.5; Mimicry: mean(relu x) = 1.5


def test_sngan_hats_use_the_authors_block_and_keras_init_by_default():
    authors, mimicry = create_hat("sngan32", (3, 32, 32), 8), create_hat("sngan32", (3, 32, 32), 8, block="mimicry")
    assert not authors.block2.shortcut_relu and mimicry.block2.shortcut_relu
    assert all((m.bias == 0).all() for m in authors.modules() if isinstance(m, torch.nn.Conv2d))
    assert any((m.bias != 0).any() for m in mimicry.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(HatrefineError, match="unknown hat block"):
        create_hat("sngan32", (3, 32, 32), 8, block="keras")


def test_a_hat_from_a_hook_spectral_norm_discriminator_saves_and_loads_like_any_hat():
    from hatrefine.adapters.mimicry import MODELS

    torch.manual_seed(0)
    d = MODELS["sngan_cifar10"].discriminator(8).eval()  # Mimicry's layout: hook-based spectral norm
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = -d(x).flatten()
    hat = hat_from_discriminator(d)
    with torch.no_grad():
        torch.testing.assert_close(hat(x), expected, rtol=1e-5, atol=1e-5)  # H starts as -d
        for p in hat.parameters():
            p.mul_(1.1)
    torch.manual_seed(0)
    other = hat_from_discriminator(MODELS["sngan_cifar10"].discriminator(8))
    other.load_state_dict(hat.state_dict())  # torch's leftover spectral-norm hook would ask for weight_orig here
    with torch.no_grad():
        torch.testing.assert_close(other(x), hat(x))
