"""The ``hatrefine`` command line: generate, fit, sample, refine, list.

Problems a user can fix end in one line on stderr and exit code 1 (``--debug`` shows the
traceback). No command overwrites an existing file or run without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from pathlib import Path
from typing import Optional

import click
import torch

from .config import FitConfig
from .errors import HatrefineError

FIT_HELP = {
    "generator": "Generator spec (`hatrefine list`).",
    "checkpoint": "Local weights file for the generator.",
    "data": "Data spec: builtin:mnist, cifar10/mnist/svhn/celeba, a .npz, or an image folder.",
    "data_root": "Where torchvision datasets are (or get downloaded).",
    "mode": "joint: Langevin on (Y, Z); conditional: Y only, Z from the prior.",
    "hat": "Hat network: small, sngan32, sngan64, sngan128 or timm:MODEL (default: by image size).",
    "hat_width": "Width of the hat network.",
    "steps": "Number of updates of H.",
    "batch_size": "Batch size (data and Langevin chains).",
    "langevin_steps": "K, Langevin steps per chain during training.",
    "langevin_steps_test": "K for sampling and refining (default: same as training).",
    "eps_y": "Langevin step size on the residual Y.",
    "eps_z": "Langevin step size on the latent Z (joint mode).",
    "noise": "Scale of the Langevin noise (1 = exact Langevin).",
    "y_clip": "Per-sample bound on the norm of the Y gradient step.",
    "step_schedule": "Step-size schedule along a chain: constant, linear, cosine, exponential.",
    "step_schedule_end": "Step-size factor at the last Langevin step.",
    "temperature": "T: the energy is H / T.",
    "y_sigma": "Sigma of a Gaussian prior on Y (off by default; the paper used 0.1 for retrofit).",
    "z_prior_weight": "Weight of the N(0, I) prior term on Z (0 = off, as the authors ran it).",
    "data_noise": "Std of the Gaussian noise added to data images.",
    "lr": "Adam learning rate for H.",
    "lr_schedule": "constant or cosine.",
    "grad_clip": "Clip the gradient norm of H (off by default).",
    "ema": "EMA decay of H's weights; sampling uses the EMA.",
    "seed": "Random seed.",
    "device": "auto, cpu, cuda or cuda:N.",
    "amp": "Evaluate energies under bf16 autocast.",
    "compile": "torch.compile the hat network.",
    "log_every": "Write log.csv every N steps.",
    "sample_every": "Save a sample grid every N steps.",
    "save_every": "Save a checkpoint every N steps.",
    "eval_samples": "Samples for the before/after quality line at the end (0 = skip).",
}


def _fit_options(f):
    """One click option per FitConfig field, defaults from the dataclass."""
    for field in reversed(dataclasses.fields(FitConfig)):
        name = "--" + field.name.replace("_", "-")
        default = field.default
        if field.type in ("bool",):
            f = click.option(name + "/--no-" + field.name.replace("_", "-"), default=default, show_default=True, help=FIT_HELP[field.name])(f)
            continue
        kind = {"int": int, "float": float, "Optional[int]": int, "Optional[float]": float}.get(field.type, str)
        if field.name == "mode":
            kind = click.Choice(["joint", "conditional"])
        f = click.option(name, type=kind, default=default, show_default=default is not None, help=FIT_HELP[field.name])(f)
    return f


def _check_new_files(overwrite: bool, *paths: Optional[str]) -> None:
    for path in paths:
        if path and Path(path).exists() and not overwrite:
            raise HatrefineError(f"{path} already exists; pass --overwrite to replace it or choose another path")


def _write_png(images: torch.Tensor, png: Optional[str]) -> None:
    if png:
        from .report import save_grid

        save_grid(images, png)
        click.echo(f"wrote {png}")


class _Group(click.Group):
    """Turns HatrefineError (and anything unexpected) into one line unless --debug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except HatrefineError as e:
            if ctx.meta.get("debug"):
                traceback.print_exc()
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)
        except Exception as e:  # a bug or an unforeseen input: still one line by default
            if ctx.meta.get("debug"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            click.echo(f"Error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="hatrefine")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Hat EBM on top of a frozen pretrained generator: fit it, sample from it, refine images."""
    ctx.meta["debug"] = debug


@main.command("list")
def list_cmd() -> None:
    """List the generator specs the registry knows."""
    from .registry import known_specs

    for spec in known_specs():
        click.echo(spec)


@main.command()
@click.option("--generator", "spec", default="builtin:mnist", show_default=True, help="Generator spec (`hatrefine list`).")
@click.option("--checkpoint", default=None, help="Local weights file for the generator.")
@click.option("--n", "n", type=int, default=64, show_default=True, help="Number of samples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, help="Output .npz: x (N, C, H, W) in [-1, 1] and z (N, *latent_shape), float32.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--png", default=None, help="Also save a grid of the first 64 samples.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def generate(spec, checkpoint, n, seed, out, batch_size, device, png, overwrite) -> None:
    """Write the generator's own samples (no refinement)."""
    from .io import NpzWriter
    from .refiner import resolve_device
    from .registry import load_generator

    if n <= 0 or batch_size <= 0:
        raise HatrefineError(f"--n and --batch-size must be positive, got {n} and {batch_size}")
    _check_new_files(overwrite, out, png)
    G = load_generator(spec, checkpoint).to(resolve_device(device))
    rng = torch.Generator(G.device).manual_seed(seed)
    first = None
    with NpzWriter(out, n, {"x": G.image_shape, "z": G.latent_shape}) as w, torch.no_grad():
        for s in range(0, n, batch_size):
            z = G.sample_latent(min(batch_size, n - s), generator=rng)
            x = G(z)
            w.write(x=x, z=z)
            first = x if first is None else first
    click.echo(f"wrote {n} samples of {spec} to {out}")
    _write_png(first, png)


@main.command()
@_fit_options
@click.option("--out", default="runs/mnist-joint", show_default=True, help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where its last checkpoint left it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def fit(ctx: click.Context, out, resume, overwrite, quiet, **settings) -> None:
    """Fit a hat network on top of a frozen generator (defaults: the embedded MNIST setting).

    With --resume every setting comes from the saved run; only --steps may extend it."""
    from .trainer import Trainer

    if resume:
        given = [k for k in settings if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE]
        if set(given) - {"steps"}:
            flags = ", ".join("--" + k.replace("_", "-") for k in given if k != "steps")
            raise HatrefineError(f"{flags} cannot change on --resume; the run keeps the settings in {Path(out) / 'config.json'} (only --steps may extend it)")
        trainer = Trainer(None, out, resume=True, steps=settings["steps"] if "steps" in given else None)
    else:
        trainer = Trainer(FitConfig(**settings), out, overwrite=overwrite)
    click.echo(f"fitting {trainer.config.mode} Hat EBM on {trainer.config.generator} with {trainer.config.data} into {out} (device {trainer.device})")
    trainer.run(progress=not quiet)
    click.echo(f"done: {out} (hat.safetensors, log.csv, samples/, training_curve.png, before_after.png, langevin_path.png)")


def _run_options(f):
    f = click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")(f)
    f = click.option("--png", default=None, help="Also save a grid of the first 64 results.")(f)
    f = click.option("--device", default=None, help="Default: the run's device setting.")(f)
    f = click.option("--batch-size", type=int, default=256, show_default=True, help="Chains per chunk (bounds memory).")(f)
    f = click.option("--langevin-steps", type=int, default=None, help="K (default: the run's test-time K).")(f)
    f = click.option("--seed", type=int, default=0, show_default=True)(f)
    f = click.option("--run", "run_dir", required=True, help="Run directory of `hatrefine fit`, or hf:ORG/NAME.")(f)
    return f


@main.command()
@_run_options
@click.option("--n", "n", type=int, default=64, show_default=True, help="Number of samples.")
@click.option("--out", required=True, help="Output .npz with x, z, y and g = G(z) (float32 NCHW, [-1, 1]).")
def sample(run_dir, seed, langevin_steps, batch_size, device, png, overwrite, n, out) -> None:
    """Draw refined samples from a fitted Hat EBM, streamed to disk in chunks.

    The same --seed and --batch-size give the same samples."""
    from .io import NpzWriter
    from .refiner import HatRefiner

    _check_new_files(overwrite, out, png)
    refiner = HatRefiner.from_pretrained(run_dir, device=device)
    G, first = refiner.generator, None
    shapes = {"x": G.image_shape, "z": G.latent_shape, "y": G.image_shape, "g": G.image_shape}
    with NpzWriter(out, n, shapes) as w:
        for res in refiner.iter_samples(n, seed=seed, batch_size=batch_size, n_steps=langevin_steps):
            w.write(x=res.x, z=res.z, y=res.y, g=res.g)
            first = res.x if first is None else first
    click.echo(f"wrote {n} refined samples to {out}")
    _write_png(first, png)


@main.command()
@_run_options
@click.option("--input", "input_path", required=True, help=".npz with x (images) and/or z (latents).")
@click.option("--out", required=True, help="Output .npz with x, z, y and g.")
@click.option("--pixel-only", is_flag=True, help="Refine the residual Y only; Z stays fixed.")
@click.option("--invert-steps", type=int, default=200, show_default=True, help="Adam steps of latent inversion (images only).")
def refine(run_dir, seed, langevin_steps, batch_size, device, png, overwrite, input_path, out, pixel_only, invert_steps) -> None:
    """Improve samples you already have: from their latents, or from images alone (by inversion)."""
    from .io import read_npz, save_npz
    from .refiner import HatRefiner

    _check_new_files(overwrite, out, png)
    arrays = read_npz(input_path, optional=("x", "z"))
    if not arrays:
        raise HatrefineError(f"{input_path} holds neither 'x' (images) nor 'z' (latents); write at least one of them")
    refiner = HatRefiner.from_pretrained(run_dir, device=device)
    res = refiner.refine(z=arrays.get("z"), x=arrays.get("x"), pixel_only=pixel_only, n_steps=langevin_steps, seed=seed, batch_size=batch_size, invert_steps=invert_steps)
    save_npz(out, x=res.x, z=res.z, y=res.y, g=res.g)
    click.echo(f"wrote {len(res.x)} refined samples to {out}")
    _write_png(res.x, png)


if __name__ == "__main__":
    main()
