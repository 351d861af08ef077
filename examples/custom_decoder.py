"""Your own decoder, end to end: wrap it, fit a Hat EBM on your images, sample, refine, evaluate.

    cd examples && python custom_decoder.py          # about 5 minutes on 2 CPU cores

The decoder is defined here and built by ``make_decoder``, so every command reaches it as the
spec ``py:custom_decoder:make_decoder`` (run from this folder, or put it on PYTHONPATH), and
the fitted run reloads it from there. Your images: a folder or an ``.npz`` with an array
``x`` (uint8 in [0, 255] or float in [-1, 1]); this example writes a stand-in ``.npz`` of
16x16 digits from the embedded data and pretrains the decoder on it for a minute.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hatrefine import fit, load_generator
from hatrefine.adapters import wrap

OUT = Path("runs/custom")
SPEC = "py:custom_decoder:make_decoder"


def decoder_net() -> nn.Module:
    """Stands in for your decoder: (N, 16) latents -> (N, 1, 16, 16) images in (-1, 1)."""
    return nn.Sequential(
        nn.Linear(16, 64 * 4 * 4), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Tanh(),
    )  # fmt: skip


def make_decoder(checkpoint=None):
    """The factory behind ``py:custom_decoder:make_decoder``: your decoder, wrapped (frozen, N(0, I) latents)."""
    net = decoder_net()
    if checkpoint:
        net.load_state_dict(torch.load(checkpoint, weights_only=True))
    return wrap(net, latent_shape=(16,), image_shape=(1, 16, 16), value_range=(-1, 1))


def your_images(path: Path, n: int = 2000) -> None:
    """A stand-in for your data: ``n`` embedded digits at 16x16, as an .npz of uint8."""
    from hatrefine.data import load_images

    x = load_images("builtin:mnist", (1, 16, 16), limit=n)
    np.savez(path, x=((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())


def pretrain(images: Path, checkpoint: Path, steps: int = 600) -> None:
    """Stands in for your own training: the decoder of a small autoencoder, its latents kept near N(0, I)."""
    torch.manual_seed(0)
    x = torch.from_numpy(np.load(images)["x"]).float().div(127.5).sub(1)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 16))
    decoder = decoder_net()
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    for _ in range(steps):
        batch = x[torch.randint(len(x), (64,))]
        z = encoder(batch)
        loss = (decoder(z + 0.1 * torch.randn_like(z)) - batch).square().mean() + 1e-3 * (z.square().mean() - 1).square()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(decoder.state_dict(), checkpoint)


def hatrefine(*args: str) -> None:
    """A CLI command, as you would type it (the spec reaches this file's factory)."""
    print("$ hatrefine", " ".join(args))
    subprocess.run([sys.executable, "-m", "hatrefine.cli", *args], check=True)


if __name__ == "__main__":
    tiny = "--tiny" in sys.argv  # seconds, for the test suite: the same path at toy sizes, no Inception
    OUT.mkdir(parents=True, exist_ok=True)
    images, checkpoint = OUT / "my_images.npz", OUT / "decoder.pt"
    your_images(images, n=200 if tiny else 2000)
    pretrain(images, checkpoint, steps=5 if tiny else 600)
    # fit: the default hat for 1x16x16 images is the small conv hat; at the end the fit calibrates T and K on held-out images
    # (loaded by its spec, the run records it and reloads it from this file anywhere)
    size = {"steps": 2, "eval_samples": 0, "calibrate": False} if tiny else {"steps": 300, "eval_samples": 500}
    fit(OUT / "run", generator=load_generator(SPEC, str(checkpoint)), checkpoint=str(checkpoint), data=str(images), overwrite=True, progress=not tiny, **size)
    n = "16" if tiny else "500"
    hatrefine("sample", "--run", str(OUT / "run"), "--n", n, "--out", str(OUT / "samples.npz"), "--png", str(OUT / "samples.png"), "--overwrite")
    hatrefine("generate", "--generator", SPEC, "--checkpoint", str(checkpoint), "--n", n, "--out", str(OUT / "decoder_samples.npz"), "--overwrite")
    hatrefine(
        "refine",
        "--run",
        str(OUT / "run"),
        "--input",
        str(OUT / "decoder_samples.npz"),
        "--out",
        str(OUT / "refined.npz"),
        "--png",
        str(OUT / "refined.png"),
        "--overwrite",
    )
    if not tiny:
        hatrefine("eval", "--samples", str(OUT / "samples.npz"), "--data", str(images), "--n", n, "--n-ref", n)
