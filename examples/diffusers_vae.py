"""A Hat EBM on a diffusers VAE: fit on CIFAR-10 through sd-turbo's VAE, sample, refine real images.

    pip install 'hatrefine[diffusers]'
    python examples/diffusers_vae.py          # downloads the VAE (about 330 MB) and CIFAR-10 once; a GPU helps
    python examples/diffusers_vae.py --tiny   # the same commands on a small random VAE and random images, offline, seconds

The generator is the VAE's decoder, ``diffusers:stabilityai/sd-turbo[subfolder=vae,size=64]``:
64-pixel images from (4, 8, 8) latents with a N(0, I) prior in the diffusion model's units
(the VAE's latent times its ``scaling_factor``). ``refine --start encoder`` starts each chain
at the VAE's own encoding of the image instead of an inversion by optimisation.
"""

import sys
from pathlib import Path

import numpy as np

from hatrefine.cli import main

OUT = Path("runs/diffusers-vae")


def hatrefine(*args) -> None:
    """A CLI command, as you would type it."""
    print("$ hatrefine", " ".join(map(str, args)))
    main([str(a) for a in args], standalone_mode=False)


def tiny_vae(directory: Path) -> str:
    """A small random AutoencoderKL, saved as diffusers saves any: its spec is diffusers:DIR."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    blocks = dict(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    AutoencoderKL(**blocks, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=32).save_pretrained(directory)
    return f"diffusers:{directory}[chunk=4]"


if __name__ == "__main__":
    tiny = "--tiny" in sys.argv
    OUT.mkdir(parents=True, exist_ok=True)
    if tiny:
        spec, data, size = tiny_vae(OUT / "vae"), OUT / "data.npz", 32
        np.savez(data, x=np.random.default_rng(0).uniform(-1, 1, (40, 3, size, size)).astype(np.float32))
        settings = ["--steps", 2, "--langevin-steps", 2, "--batch-size", 4, "--hat", "small", "--hat-width", 4, "--eval-samples", 0, "--no-calibrate"]
    else:
        spec, data, size = "diffusers:stabilityai/sd-turbo[subfolder=vae,size=64]", "cifar10", 64
        settings = ["--steps", 2000, "--langevin-steps", 20, "--batch-size", 32, "--eval-samples", 0, "--no-calibrate"]
    hatrefine("generate", "--generator", spec, "--n", 16, "--out", OUT / "vae_samples.npz", "--png", OUT / "vae_samples.png", "--overwrite")
    hatrefine("fit", "--generator", spec, "--data", data, "--out", OUT / "run", "--overwrite", "--quiet", *settings)
    hatrefine("sample", "--run", OUT / "run", "--n", 16, "--out", OUT / "samples.npz", "--png", OUT / "samples.png", "--overwrite")

    from hatrefine.data import load_images

    images = load_images(str(data), (3, size, size), split="test", limit=16)  # real images, in [-1, 1]
    np.savez(OUT / "real.npz", x=images.numpy())
    hatrefine(
        "refine",
        "--run",
        OUT / "run",
        "--input",
        OUT / "real.npz",
        "--start",
        "encoder",
        "--out",
        OUT / "refined.npz",
        "--png",
        OUT / "refined.png",
        "--overwrite",
    )
