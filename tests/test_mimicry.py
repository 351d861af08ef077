"""Mimicry SN-GAN compatibility: state-dict layout, numbers, checkpoint formats, loading safety."""

import json
import os
from pathlib import Path

import pytest
import torch

from hatrefine import HatrefineError, load_discriminator, load_generator
from hatrefine.adapters.mimicry import MODELS, fetch_zoo_checkpoint
from hatrefine.files.checkpoint import read_state_dict
from hatrefine.networks.resblocks import ResNetDiscriminator, ResNetGenerator

DATA = Path(__file__).parent / "data"
LAYOUT = json.loads((DATA / "mimicry_layout.json").read_text())


def _layout(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    "key, build",
    [
        ("G32", lambda: MODELS["sngan_cifar10"].generator()),
        ("D32", lambda: MODELS["sngan_cifar10"].discriminator()),
        ("G64", lambda: MODELS["sngan_celeba64"].generator()),
        ("D64", lambda: MODELS["sngan_celeba64"].discriminator()),
    ],
)
def test_state_dict_layout_matches_mimicry(key, build):
    assert _layout(build()) == LAYOUT[key]


def test_published_layout_facts():
    g = _layout(MODELS["sngan_cifar10"].generator())
    assert len(g) == 57
    assert g["l1.weight"] == [4096, 128] and g["block2.c1.weight"] == [256, 256, 3, 3]
    assert g["b5.running_mean"] == [256] and g["c5.weight"] == [3, 256, 3, 3]
    n_params = sum(p.numel() for p in MODELS["sngan_cifar10"].generator().parameters())
    assert abs(n_params - 4.28e6) < 0.01e6
    d = _layout(MODELS["sngan_cifar10"].discriminator())
    assert {"block1.c1.weight_orig", "block1.c1.weight_u", "block1.c1.weight_v", "l5.weight_orig"} <= set(d)
    assert not any(k.endswith(".weight") for k in d)  # spectral norm stores weight_orig, not weight


def test_forward_passes_reproduce_mimicry_numbers():
    t = read_state_dict(DATA / "mimicry_tiny_sngan32.safetensors")
    g = ResNetGenerator(128, [16, 16, 16, 16])
    d = ResNetDiscriminator(3, 8, [(8, True), (8, False), (8, False)])
    g.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("G.")}, strict=True)
    d.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("D.")}, strict=True)
    g.eval(), d.eval()
    with torch.no_grad():
        torch.testing.assert_close(g(t["z"]), t["G_out"], rtol=1e-5, atol=1e-5)
        # the discriminator's shortcut sees relu(x) (Mimicry's in-place ReLU): without it this differs
        torch.testing.assert_close(d(t["x"]), t["D_out"], rtol=1e-5, atol=1e-4)


def _trained_like(module):
    module.train()
    with torch.no_grad():
        for _ in range(2):
            module(torch.randn(4, 128)) if isinstance(module, ResNetGenerator) else module(torch.randn(4, 3, 32, 32))
    return module.eval()


def test_mimicry_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    g = _trained_like(MODELS["sngan_cifar10"].generator())
    path = tmp_path / "netG_100_steps.pth"
    torch.save({"model_state_dict": g.state_dict(), "optimizer_state_dict": {"state": {}, "param_groups": []}, "global_step": 100}, path)
    loaded = load_generator("mimicry:sngan_cifar10", checkpoint=str(path))
    z = torch.randn(3, 128)
    with torch.no_grad():
        assert torch.equal(loaded(z), g(z))

    d = _trained_like(MODELS["sngan_cifar10"].discriminator())
    dpath = tmp_path / "netD.pth"
    torch.save(d.state_dict(), dpath)  # a bare state dict loads too
    loaded_d = load_discriminator("mimicry:sngan_cifar10", checkpoint=str(dpath))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded_d(x), d(x))
    assert all(not p.requires_grad for p in loaded_d.parameters())


def test_checkpoint_of_another_architecture_names_the_keys(tmp_path):
    path = tmp_path / "netD.pth"
    torch.save(MODELS["sngan_cifar10"].discriminator().state_dict(), path)
    with pytest.raises(HatrefineError, match=r"another architecture: missing l1\.weight.*unexpected block1\.c1\.bias, block1\.c1\.weight_orig"):
        load_generator("mimicry:sngan_cifar10", checkpoint=str(path))


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "netG.pth"
    torch.save(MODELS["sngan_cifar10"].generator().state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(HatrefineError, match="truncated or not a weights file"):
        load_generator("mimicry:sngan_cifar10", checkpoint=str(path))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_loading_never_executes_code_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model_state_dict": {}, "extra": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(HatrefineError, match="could not be read safely"):
        load_generator("mimicry:sngan_cifar10", checkpoint=str(tmp_path / "evil.pth"))
    assert not (tmp_path / "PWNED").exists()


def test_offline_without_file_names_both_options(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HATREFINE_OFFLINE", "1")
    with pytest.raises(HatrefineError) as e:
        load_generator("mimicry:sngan_cifar10")
    msg = str(e.value)
    assert "--checkpoint" in msg and "download" in msg and "\n" not in msg


def test_zoo_download_is_cached(tmp_path, monkeypatch):
    """The download path, against a local file: fetched once into the torch hub cache."""
    g = MODELS["sngan_cifar10"].generator()
    src = tmp_path / "netG.pth"
    torch.save({"model_state_dict": g.state_dict(), "optimizer_state_dict": {}, "global_step": 1}, src)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HATREFINE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cached = fetch_zoo_checkpoint("sngan_cifar10", url=src.as_uri())
    assert cached.is_relative_to(tmp_path / "torch") and cached.read_bytes() == src.read_bytes()
    src.unlink()
    monkeypatch.setenv("HATREFINE_OFFLINE", "1")
    loaded = load_generator("mimicry:sngan_cifar10")  # served from the cache, no network
    z = torch.randn(2, 128)
    with torch.no_grad():
        assert torch.equal(loaded(z), g.eval()(z))


def test_narrow_widths_load_from_the_spec_or_the_checkpoint_and_match_mimicry(tmp_path):
    t = read_state_dict(DATA / "mimicry_tiny_sngan32.safetensors")  # Mimicry's own modules at ngf 16, ndf 8
    for net, name in (("G", "netG"), ("D", "netD")):
        state = {k[2:]: v for k, v in t.items() if k.startswith(net + ".")}
        torch.save({"model_state_dict": state, "optimizer_state_dict": {}, "global_step": 7}, tmp_path / f"{name}.pth")
    for spec in ("mimicry:sngan_cifar10", "mimicry:sngan_cifar10[ngf=16,ndf=8]"):
        G = load_generator(spec, str(tmp_path / "netG.pth"))
        D = load_discriminator(spec, str(tmp_path / "netD.pth"))
        with torch.no_grad():
            torch.testing.assert_close(G(t["z"]), t["G_out"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(D(t["x"]), t["D_out"], rtol=1e-5, atol=1e-4)
    with pytest.raises(HatrefineError, match=r"netG.pth has ngf 16, not 32; pass \[ngf=16\]"):
        load_generator("mimicry:sngan_cifar10[ngf=32]", str(tmp_path / "netG.pth"))
    with pytest.raises(HatrefineError, match=r"netD.pth has ndf 8, not 128"):
        load_discriminator("mimicry:sngan_cifar10[ndf=128]", str(tmp_path / "netD.pth"))
    with pytest.raises(HatrefineError, match="bad option"):
        load_generator("mimicry:sngan_cifar10[width=16]", str(tmp_path / "netG.pth"))
    assert MODELS["sngan_celeba64"].discriminator(64).block1.c1.weight_orig.shape[0] == 4  # ndf >> 4, as Mimicry's SNGANDiscriminator64
