"""Train the colour embedded default (``builtin:twemoji``): Mimicry's SN-GAN 32 at reduced widths
on the training split of the embedded Twemoji set, saved in Mimicry's own checkpoint format.

Mimicry's CIFAR-10 SN-GAN recipe, widths aside: ``SNGANGenerator32`` / ``SNGANDiscriminator32``
layout, hinge loss, n_dis 5, Adam 2e-4 with betas (0.0, 0.9), batch 64, learning rates decayed
linearly to zero over ``--steps``. Checkpoints are written every ``--every`` generator steps as
``WORKDIR/checkpoints/netG/netG_<step>_steps.pth`` (and ``netD``), each
``{'model_state_dict', 'optimizer_state_dict', 'global_step'}`` as Mimicry writes them; a rerun
with the same ``WORKDIR`` resumes from the newest pair. ``--ship`` copies the newest pair into
``hatrefine/assets/twemoji_sngan/``. ``--classifier`` trains the quick quality figure's network
instead: a LeNet of the ten emoji categories on the training split (the emoji classifier).

    python examples/train_twemoji_gan.py --workdir ~/twemoji_gan            # hours on 2 CPU cores
    python examples/train_twemoji_gan.py --workdir ~/twemoji_gan --ship     # then ship it
    python examples/train_twemoji_gan.py --workdir ~/twemoji_gan --classifier
"""

import argparse
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hatrefine.data import DataStream, embedded_twemoji, open_dataset, to_tensor, twemoji_split
from hatrefine.files.checkpoint import save_tensors
from hatrefine.networks.resblocks import ResNetDiscriminator, ResNetGenerator
from hatrefine.training.classifier import accuracy, train_classifier

ASSETS = Path(__file__).resolve().parents[1] / "hatrefine" / "assets" / "twemoji_sngan"
CLASSIFIER = ASSETS.parent / "twemoji_classifier.safetensors"


def emoji_classifier(seed: int, steps: int = 1500) -> None:
    """The emoji classifier: a LeNet of the ten categories, on the training split, with flips and a little noise."""
    images, labels, names, _ = embedded_twemoji()
    x, y = to_tensor(images), torch.as_tensor(labels)
    train, test = torch.from_numpy(twemoji_split(names, "train")), torch.from_numpy(twemoji_split(names, "test"))
    net = train_classifier(x, y, train, seed, steps, flips=True)
    majority = (y[test] == y[train].mode().values).float().mean().item()
    print(
        f"emoji classifier: held-out accuracy {accuracy(net, x[test], y[test]):.3f} over {int(test.sum())} emoji (the majority category alone: {majority:.3f})"
    )
    save_tensors(CLASSIFIER, net.state_dict())
    print(f"wrote {CLASSIFIER}")


def build(ngf: int, ndf: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """SNGANGenerator32(ngf) and SNGANDiscriminator32(ndf), in Mimicry's layout."""
    G = ResNetGenerator(nz=128, channels=[ngf] * 4)
    D = ResNetDiscriminator(3, ndf, [(ndf, True), (ndf, False), (ndf, False)], spectral_norm=True, pool="sum")
    return G, D


def newest(workdir: Path) -> int:
    steps = [int(p.name.split("_")[1]) for p in (workdir / "checkpoints" / "netG").glob("netG_*_steps.pth")]
    return max(steps, default=0)


def save(workdir: Path, name: str, net, opt, step: int, keep: int = 3) -> None:
    folder = workdir / "checkpoints" / name
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}_{step}.tmp"
    torch.save({"model_state_dict": net.state_dict(), "optimizer_state_dict": opt.state_dict(), "global_step": step}, tmp)
    tmp.rename(folder / f"{name}_{step}_steps.pth")
    for old in sorted(folder.glob(f"{name}_*_steps.pth"), key=lambda p: int(p.name.split("_")[1]))[:-keep]:
        old.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--data", default="builtin:twemoji")
    p.add_argument("--steps", type=int, default=5000, help="generator steps")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=32)
    p.add_argument("--n-dis", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ship", action="store_true", help="copy the newest checkpoints into the package and exit")
    p.add_argument("--classifier", action="store_true", help="train the emoji classifier (the quick quality figure) and exit")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.classifier:
        return emoji_classifier(args.seed)
    if args.ship:
        step = newest(args.workdir)
        ASSETS.mkdir(parents=True, exist_ok=True)
        for name in ("netG", "netD"):
            shutil.copy(args.workdir / "checkpoints" / name / f"{name}_{step}_steps.pth", ASSETS / f"{name}.pth")
        print(f"shipped step {step} into {ASSETS}")
        return

    G, D = build(args.ngf, args.ndf)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.0, 0.9))
    start = newest(args.workdir)
    if start:
        for name, net, opt in (("netG", G, opt_g), ("netD", D, opt_d)):
            ckpt = torch.load(args.workdir / "checkpoints" / name / f"{name}_{start}_steps.pth", weights_only=True)
            net.load_state_dict(ckpt["model_state_dict"])
            opt.load_state_dict(ckpt["optimizer_state_dict"])
        print(f"resumed at step {start}", flush=True)
    decay = lambda step: 1.0 - step / args.steps  # noqa: E731  Mimicry's linear decay
    sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, decay, last_epoch=start - 1) if start else torch.optim.lr_scheduler.LambdaLR(opt_g, decay)
    sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, decay, last_epoch=start - 1) if start else torch.optim.lr_scheduler.LambdaLR(opt_d, decay)

    stream = DataStream(open_dataset(args.data, (3, 32, 32), split="train"), args.batch, args.seed)
    gen = torch.Generator().manual_seed(args.seed * 7919 + start)  # latents: a fresh stream per resume point
    t0 = time.time()
    for step in range(start, args.steps):
        for k in range(args.n_dis):
            real = stream.batch(step * args.n_dis + k)
            with torch.no_grad():
                fake = G(torch.randn(args.batch, 128, generator=gen))
            loss_d = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        loss_g = -D(G(torch.randn(args.batch, 128, generator=gen))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sched_g.step()
        sched_d.step()
        done = step + 1
        if done % 50 == 0:
            rate = (time.time() - t0) / (done - start)
            print(f"step {done:6d}  loss_d {loss_d.item():.3f}  loss_g {loss_g.item():.3f}  {rate:.2f} s/step", flush=True)
        if done % args.every == 0 or done == args.steps:
            save(args.workdir, "netG", G, opt_g, done)
            save(args.workdir, "netD", D, opt_d, done)


if __name__ == "__main__":
    main()
