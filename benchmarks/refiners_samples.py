"""What each post-hoc refiner does to the embedded GAN's samples, at the default knob of
``refiners_mnist.py``: a strip of 12 samples per method (the generator, DOT, DGflow, DDLS and the
Hat EBM from the same latents; DRS and MH-GAN output whichever proposals they accept; the latent
prior its own chains) and the quick classifier's class frequencies of ``--n`` samples per method.

    python benchmarks/refiners_samples.py --hat-run runs/mnist-joint --prior-run runs/mnist-prior \\
        --json benchmarks/results/refiners_classes_mnist.json --figure benchmarks/results/refiners_mnist_samples.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import header, write_json  # noqa: E402
from refiners_mnist import KNOBS, chains, discriminator_refiner  # noqa: E402

from hatrefine.data import load_images  # noqa: E402
from hatrefine.evaluation.metrics import class_histogram, class_probabilities, load_classifier  # noqa: E402
from hatrefine.models.runs import load_run  # noqa: E402
from hatrefine.networks.registry import load_discriminator, load_generator  # noqa: E402
from hatrefine.sampling.density_ratio import calibrate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="builtin:mnist")
    p.add_argument("--hat-run", required=True)
    p.add_argument("--prior-run", required=True)
    p.add_argument("--n", type=int, default=1000, help="samples per method for the class frequencies")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--figure", default=None)
    args = p.parse_args()
    G, D = load_generator(args.generator), load_discriminator(args.generator)
    reference = load_images(args.generator, G.image_shape, split="train")
    calibration = calibrate(G, D, reference[:1000], seed=args.seed)
    z0 = G.sample_latent(args.n, generator=torch.Generator().manual_seed(args.seed))
    samples = {}
    with torch.no_grad():
        samples["generator"] = G(z0)
    for method in ("drs", "mh", "dot", "dgflow", "ddls_calibrated"):
        default = KNOBS[method][2]
        refiner = discriminator_refiner(method, default, G, D, calibration, reference[:1000])
        samples[f"{method} @ {default}"] = refiner.sample(args.n, seed=args.seed, batch_size=250).x
    for name, path in (("prior", args.prior_run), ("hat", args.hat_run)):
        model = load_run(path)
        samples[f"{name} @ {model.sampling.langevin_steps}"] = chains(model.sampler(), z0, args.seed, 250)
    net = load_classifier(G.image_shape)
    result = header(args, torch.device("cpu")) | {"data": class_histogram(class_probabilities(reference, net))["frequencies"]}
    result["methods"] = {name: class_histogram(class_probabilities(x.detach(), net))["frequencies"] for name, x in samples.items()}
    write_json(args.json, result)
    if args.figure:
        fig, axes = plt.subplots(len(samples), 1, figsize=(7.5, 0.75 * len(samples)))
        for ax, (name, x) in zip(axes, samples.items()):
            strip = torch.cat(list(x[:12].detach().clamp(-1, 1).mean(1)), dim=1)
            ax.imshow(strip.numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)


if __name__ == "__main__":
    main()
