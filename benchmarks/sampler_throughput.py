"""Sampler throughput against its physical bound, in one process.

For each setting and mode, the time of one Langevin step is measured as
(time of 2K steps - time of K steps) / K, which removes the per-chain set-up. The bound is
the network work a step cannot avoid, timed on its own:

  conditional: one H forward + one input-gradient backward through H
  joint:       one G forward + one G input-gradient backward + two H forward/backward passes

ratio = bound / measured (1.0 = no overhead beyond the networks). Target: >= 0.9.

    python benchmarks/sampler_throughput.py            # default + SN-GAN32 settings, batch 64
    python benchmarks/sampler_throughput.py --amp --channels-last --out benchmarks/results/sampler_throughput_fast.json
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from common import command_line

from hatrefine import load_generator
from hatrefine.adapters import wrap
from hatrefine.adapters.mimicry import MODELS
from hatrefine.networks.hat import create_hat
from hatrefine.sampling.energy import HatEnergy
from hatrefine.sampling.langevin import LangevinSampler


def timed(fn, reps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``reps`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def bound(G, H, z, mode: str, reps: int, device) -> float:
    """Seconds of the network passes one step needs, measured without the sampler."""
    H.requires_grad_(False)
    with torch.no_grad():
        x0 = G(z)

    def h_pass():
        x = x0.detach().requires_grad_(True)
        torch.autograd.grad(H(x).sum(), x)

    def g_pass():
        zz = z.detach().requires_grad_(True)
        g = G(zz)
        torch.autograd.grad(g, zz, grad_outputs=torch.ones_like(g))

    t_h = timed(h_pass, reps, device)
    return t_h if mode == "conditional" else timed(g_pass, reps, device) + 2 * t_h


def measured(sampler, z, k: int, reps: int, device) -> float:
    sampler.n_steps = k
    t1 = timed(lambda: sampler.sample(z), reps, device)
    sampler.n_steps = 2 * k
    t2 = timed(lambda: sampler.sample(z), reps, device)
    return (t2 - t1) / k


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", action="store_true", help="sample under bf16 autocast (the bound stays float32)")
    p.add_argument("--channels-last", action="store_true", help="hat network and its inputs in channels_last")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sampler_throughput.json")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    settings = {
        # the embedded default: builtin:mnist DCGAN + small hat (width 32)
        "default": (load_generator("builtin:mnist"), lambda g: create_hat("small", g.image_shape), 10, 5),
        # SN-GAN32-sized G (Mimicry layout, random weights) and the paper's H (sngan32, width 256)
        "sngan32": (
            wrap(MODELS["sngan_cifar10"].generator(), (128,), (3, 32, 32), name="sngan32"),
            lambda g: create_hat("sngan32", g.image_shape),
            2,
            3,
        ),
    }
    rows = []
    for name, (G, make_hat, k, reps) in settings.items():
        G = G.to(device)
        H = make_hat(G).to(device)
        z = G.sample_latent(args.batch)
        energy = HatEnergy(H, G, temperature=1e-3, channels_last=args.channels_last)
        for mode, sampler in (
            ("conditional", LangevinSampler(energy, k, eps_y=1e-4, amp=args.amp)),
            ("joint", LangevinSampler(energy, k, eps_y=1e-4, eps_z=5e-3, amp=args.amp, joint_update="alternate")),
        ):
            step = measured(sampler, z, k, reps, device)
            b = bound(G, H, z, mode, 2 * reps + 1, device)
            rows.append(
                {"setting": name, "mode": mode, "batch": args.batch, "step_seconds": round(step, 4), "bound_seconds": round(b, 4), "ratio": round(b / step, 3)}
            )
            print(f"{name:8s} {mode:12s} step {step * 1e3:8.1f} ms   bound {b * 1e3:8.1f} ms   ratio {b / step:.3f}", flush=True)
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "command": command_line(),
        "amp": args.amp,
        "channels_last": args.channels_last,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
