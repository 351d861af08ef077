"""Train the embedded default (``builtin:mnist``): a small DCGAN on the embedded MNIST subset,
plus the LeNet used for the quick quality figure. Seeded; writes into hatrefine/assets/.

    python examples/train_embedded_gan.py --iters 6000        # ~15 min on 2 CPU cores
"""

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hatrefine.adapters.builtin import DCGANDiscriminator, DCGANGenerator
from hatrefine.adapters.hub import save_generator_dir
from hatrefine.data import DataStream, open_dataset
from hatrefine.evaluation.metrics import LeNet
from hatrefine.files.checkpoint import save_tensors
from hatrefine.training.classifier import accuracy, train_classifier

ASSETS = Path(__file__).resolve().parents[1] / "hatrefine" / "assets"


def train_lenet(seed: int, steps: int = 800) -> LeNet:
    from hatrefine.data import embedded_mnist, fit_to_shape, to_tensor

    images, labels = embedded_mnist()
    x, y = fit_to_shape(to_tensor(images), (1, 32, 32)), torch.as_tensor(labels)
    train, test = torch.arange(len(x)) % 10 != 0, torch.arange(len(x)) % 10 == 0
    net = train_classifier(x, y, train, seed, steps)
    print(f"LeNet: held-out accuracy {accuracy(net, x[test], y[test]):.3f}")
    return net


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--iters", type=int, default=6000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ASSETS)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()

    stream = DataStream(open_dataset("builtin:mnist", (1, 32, 32), split="train"), args.batch, args.seed)
    g_kwargs, d_kwargs = dict(nz=64, width=48, channels=1), dict(width=48, channels=1)
    G, D = DCGANGenerator(**g_kwargs), DCGANDiscriminator(spectral_norm=True, **d_kwargs)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    for it in range(args.iters):
        real = stream.batch(it)
        fake = G(torch.randn(args.batch, 64))
        loss_d = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake.detach())).mean()  # hinge loss
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = -D(fake).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if it % 250 == 0 or it == args.iters - 1:
            print(f"iter {it:5d}  loss_d {loss_d.item():.3f}  loss_g {loss_g.item():.3f}  {time.time() - t0:.0f}s", flush=True)
    gan_seconds = time.time() - t0

    # Ship the discriminator without spectral-norm hooks: bake W / sigma into plain weights.
    D.eval()
    with torch.no_grad():
        D(real[:1])  # eval-mode forward sets each `weight` from the stored u, v
    for m in D.modules():
        if hasattr(m, "weight_orig"):
            torch.nn.utils.remove_spectral_norm(m)
    save_generator_dir(
        args.out / "mnist_dcgan", G.eval(), "dcgan_generator", g_kwargs, latent_shape=(64,), image_shape=(1, 32, 32),
        discriminator=(D, "dcgan_discriminator", d_kwargs),
    )  # fmt: skip
    lenet = train_lenet(args.seed)
    save_tensors(args.out / "mnist_lenet.safetensors", lenet.state_dict())
    print(f"GAN training: {args.iters} iterations in {gan_seconds:.0f} s; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
