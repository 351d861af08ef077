"""A Hat EBM on BigGAN-deep 128 for one ImageNet class: generate, fit on your images of it, sample.

    pip install 'hatrefine[biggan]'
    python examples/biggan.py IMAGE_FOLDER   # your images of class 207 (golden retriever); downloads BigGAN once; a GPU helps
    python examples/biggan.py --tiny         # the same commands on a small random BigGAN and random images, offline, seconds

The generator is ``biggan:deep-128[class=207,truncation=0.5]``: the class is fixed for the run
(leave ``class=`` out to draw one per sample, held along its chain), and hatrefine's N(0, I) latent w is mapped exactly onto BigGAN's truncated noise
(0.5 * TruncNormal(-2, 2), by the inverse CDF), so Langevin's prior term is the truncated prior.
"""

import sys
from pathlib import Path

import numpy as np

from hatrefine.cli import main

OUT = Path("runs/biggan")


def hatrefine(*args) -> None:
    """A CLI command, as you would type it."""
    print("$ hatrefine", " ".join(map(str, args)))
    main([str(a) for a in args], standalone_mode=False)


def tiny_biggan(directory: Path) -> Path:
    """A small random 128-pixel BigGAN in the library's checkpoint layout (pytorch_model.bin + config.json)."""
    import torch
    from pytorch_pretrained_biggan import BigGAN, BigGANConfig

    torch.manual_seed(0)
    config = BigGANConfig(channel_width=4, layers=[(True, 16, 8), (True, 8, 4), (True, 4, 2), (True, 2, 1), (True, 1, 1)], attention_layer_position=2)
    model = BigGAN(config)
    torch.nn.init.ones_(model.generator.bn.weight)  # (the library leaves these for its checkpoints to fill)
    torch.nn.init.zeros_(model.generator.bn.bias)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    (directory / "config.json").write_text(config.to_json_string())
    return directory


if __name__ == "__main__":
    tiny = "--tiny" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--tiny"]
    if not tiny and not args:
        sys.exit("usage: python examples/biggan.py IMAGE_FOLDER  (images of ImageNet class 207), or --tiny")
    OUT.mkdir(parents=True, exist_ok=True)
    spec = "biggan:deep-128[class=207,truncation=0.5]"
    if tiny:
        weights, data = ["--checkpoint", tiny_biggan(OUT / "tiny-biggan")], OUT / "data.npz"
        np.savez(data, x=np.random.default_rng(0).uniform(-1, 1, (20, 3, 128, 128)).astype(np.float32))
        settings = ["--steps", 2, "--langevin-steps", 2, "--batch-size", 4, "--hat", "small", "--hat-width", 4, "--eval-samples", 0, "--no-calibrate"]
    else:
        weights, data = [], args[0]
        settings = ["--steps", 2000, "--langevin-steps", 20, "--batch-size", 32, "--eval-samples", 0, "--no-calibrate"]
    hatrefine("generate", "--generator", spec, *weights, "--n", 16, "--out", OUT / "biggan_samples.npz", "--png", OUT / "biggan_samples.png", "--overwrite")
    hatrefine("fit", "--generator", spec, *weights, "--data", data, "--out", OUT / "run", "--overwrite", "--quiet", *settings)
    hatrefine("sample", "--run", OUT / "run", "--n", 16, "--out", OUT / "samples.npz", "--png", OUT / "samples.png", "--overwrite")
