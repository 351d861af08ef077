"""The published comparison on colour: refine_mnist.py's protocol on the embedded colour GAN
(``builtin:twemoji``), with a latent EBM prior row.

The generator alone, DDLS (raw and calibrated, at the Hat EBM's K), the Hat EBM at the T and K
its own calibration chose on the held-out emoji, and a latent EBM prior (``fit-prior``'s
defaults), all from the same 2,000 latents, scored against the 3,385 training emoji: FID,
precision, recall, density, coverage, the emoji classifier's Frechet distance and class
histogram, sampling and fit seconds. ``--noise-sets`` scores the generator on other latents too,
for the noise of each score.

    python benchmarks/refine_twemoji.py --run runs/twemoji-joint --prior-steps 100 --noise-sets 2 \\
        --json benchmarks/results/refine_twemoji.json

``--run`` reuses a fit (the colour main job, ``hatrefine fit --generator builtin:twemoji``); without
it the script fits with the colour main job's settings (the ``twemoji`` recipe).
"""

from refine_mnist import main

if __name__ == "__main__":
    main(generator="builtin:twemoji", fit='{"recipe": "twemoji"}', prior_steps=100, doc=__doc__)
