"""The Python API on the embedded default: fit a Hat EBM briefly, sample, refine, save, load.

python examples/quickstart.py      # about 20 s on 2 CPU cores
"""

import torch

from hatrefine import HatRefiner, fit, load_generator

G = load_generator("builtin:mnist")  # or mimicry:sngan_cifar10, hf:ORG/NAME, hatrefine.adapters.wrap(...)
refiner = fit(out="runs/quickstart", generator=G, data="builtin:mnist", steps=20, langevin_steps=10, eval_samples=0, overwrite=True)

out = refiner.sample(16, seed=0)  # out.x = out.g + out.y: refined images; out.z: latents
with torch.no_grad():
    images = G(G.sample_latent(16))
better = refiner.refine(x=images, invert_steps=100)  # images only: invert G, then refine (Y, Z)

refiner.save_pretrained("runs/quickstart-saved")
again = HatRefiner.from_pretrained("runs/quickstart-saved")
assert torch.equal(again.sample(16, seed=0).x, out.x)
print("sampled", tuple(out.x.shape), "refined", tuple(better.x.shape), "mean |Y|", f"{out.y.abs().mean():.2e}")
