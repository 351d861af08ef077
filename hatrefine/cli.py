"""The ``hatrefine`` command line: list, recipes, generate, fit, calibrate, sample, refine, pretrain-ae, synthesize, fit-prior, hierarchical, ood, baseline (ddls), eval, push.

Problems a user can fix end in one line on stderr and exit code 1 (``--debug`` shows the
traceback). No command overwrites an existing file or run without ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from hatrefine.errors import HatrefineError, HatrefineWarning
from hatrefine.files.names import CONFIG, EVAL_SAMPLES
from hatrefine.settings.config import (
    HAT_BLOCKS,
    JOINT_UPDATES,
    MODES,
    FitConfig,
    SynthesisConfig,
)
from hatrefine.settings.distill import METHODS as DISTILL_METHODS
from hatrefine.settings.distill import DistillConfig
from hatrefine.settings.prior import POSTERIOR_INITS, HierarchicalConfig, PriorConfig

if TYPE_CHECKING:
    import torch


CHOICES = {"mode": MODES, "joint_update": JOINT_UPDATES, "hat_block": HAT_BLOCKS, "posterior_init": POSTERIOR_INITS, "method": DISTILL_METHODS}


def _config_options(config_class, exclude: tuple[str, ...] = ()):
    """One click option per field of a settings dataclass: defaults and help texts from the dataclass (``HELP``, beside its fields)."""
    texts = config_class.HELP

    def deco(f):
        for field in reversed(dataclasses.fields(config_class)):
            if field.name in exclude:
                continue
            name = "--" + field.name.replace("_", "-")
            default = field.default
            if field.type in ("bool",):
                f = click.option(name + "/--no-" + field.name.replace("_", "-"), default=default, show_default=True, help=texts[field.name])(f)
                continue
            kind = {"int": int, "float": float, "Optional[int]": int, "Optional[float]": float}.get(field.type, str)
            if field.name in CHOICES:
                kind = click.Choice(CHOICES[field.name])
            f = click.option(name, type=kind, default=default, show_default=default is not None, help=texts[field.name])(f)
        return f

    return deco


_fit_options = _config_options(FitConfig)


def _training_options(out: str, out_help: str, resume_help: str):
    """--out, --resume, --overwrite and --quiet of a command that trains into a run directory (and the click context)."""

    def deco(f):
        f = click.pass_context(f)
        f = click.option("--quiet", is_flag=True, help="No progress bar.")(f)
        f = click.option("--overwrite", is_flag=True, help="Replace an existing run in --out.")(f)
        f = click.option("--resume", is_flag=True, help=resume_help)(f)
        return click.option("--out", default=out, show_default=True, help=out_help)(f)

    return deco


def _check_new_files(overwrite: bool, *paths: Optional[str]) -> None:
    for path in paths:
        if path and Path(path).exists() and not overwrite:
            raise HatrefineError(f"{path} already exists; pass --overwrite to replace it or choose another path")


def _done(out: str) -> None:
    """The closing line of a training command: the run directory and what it holds now."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(out).iterdir() if not p.name.startswith((".", "checkpoint")))
    click.echo(f"done: {out} ({', '.join(names)})")


def _check_temperature(temperature: Optional[float]) -> None:
    if temperature is not None and temperature <= 0:
        raise HatrefineError(f"--temperature must be positive, got {temperature}; leave it out to use the run's own test-time T")


def _write_png(images: "torch.Tensor", png: Optional[str]) -> None:
    if png:
        from hatrefine.evaluation.report import save_grid

        save_grid(images, png)
        click.echo(f"wrote {png}")


_show_warning = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """hatrefine's own warnings as one line on stderr; others as Python prints them."""
    if issubclass(category, HatrefineWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


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
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, envvar="HATREFINE_THREADS", show_envvar=True,
    help="CPU threads for torch (default: torch's, one per core). Idle threads always wait passively, so jobs that share the cores slow each other down only by the cores they share.",
)  # fmt: skip
@click.version_option(package_name="hatrefine")
@click.pass_context
def main(ctx: click.Context, debug: bool, threads: Optional[int]) -> None:
    """Hat EBM on top of a frozen pretrained generator: fit it, sample from it, refine images; retrofit
    autoencoders; learn a generator from scratch; score out-of-distribution images; compare with DDLS; measure FID;
    share on the Hub. Under torchrun: torchrun --nproc_per_node N --no-python -- hatrefine COMMAND ..."""
    ctx.meta["debug"] = debug
    warnings.showwarning = _one_line_warning
    use_threads(threads)


def use_threads(threads: Optional[int]) -> None:
    """Set torch's CPU threads before torch loads (OpenMP reads its settings once), or now if it has.

    Idle OpenMP threads spin by default, and two spinning jobs on shared cores slow each other
    down many times over: passive waiting is the default here unless ``OMP_WAIT_POLICY`` says otherwise."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is None:
        return
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@main.command("list")
def list_cmd() -> None:
    """List the generator specs the registry knows."""
    from hatrefine.networks.registry import known_specs

    for spec in known_specs():
        click.echo(spec)


@main.command()
@click.argument("name", required=False)
def recipes(name: Optional[str]) -> None:
    """List the paper's experiments by name; with NAME, its settings per command, source and departures."""
    from hatrefine.settings.recipes import RECIPES, find_recipe

    if name is None:
        for r in RECIPES.values():
            click.echo(f"{r.name:18} {' + '.join(r.settings):31} {r.summary}")
        click.echo("hatrefine recipes NAME shows one; hatrefine fit --recipe NAME (or synthesize, pretrain-ae) runs it")
        return
    r = find_recipe(name)
    click.echo(f"{r.name}: {r.summary}\nsource: {r.source}")
    for command, settings in r.settings.items():
        click.echo(f"hatrefine {command} --recipe {r.name}:" + ("" if settings else " the command's own defaults"))
        for k, v in settings.items():
            flag = k.replace("_", "-")
            click.echo(f"  --{flag}" if v is True else f"  --no-{flag}" if v is False else f"  --{flag} {'(none)' if v is None else v}")
    for d in r.differs:
        click.echo(f"differs from the authors' run: {d}")


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
    import torch

    from hatrefine.distributed import resolve_device
    from hatrefine.files.npz import NpzWriter
    from hatrefine.networks.registry import load_generator

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
@_training_options(
    None,
    "Run directory (default: runs/RECIPE for a paper recipe, else runs/GENERATOR-MODE: runs/mnist-joint for the embedded GAN).",
    "Continue the run in --out exactly where its last checkpoint left it.",
)
def fit(ctx: click.Context, out, resume, overwrite, quiet, **settings) -> None:
    """Fit a hat network on top of a frozen generator (defaults: the embedded MNIST setting).

    With --resume every setting comes from the saved run; only --steps may extend it."""
    from hatrefine.networks.hat import describe_hat
    from hatrefine.training.trainer import Trainer

    def first_line(trainer: Trainer) -> str:
        c = trainer.config
        hat = describe_hat(c.hat, trainer.generator.image_shape, c.hat_width, trainer.hat)
        return (
            f"fitting {c.mode} Hat EBM on {c.generator} with {c.data} into {trainer.out} (device {trainer.device}); {hat}; {c.steps} updates of K {c.langevin_steps}"
            + ("; no divergence guard, as the authors (a non-finite step ends the run)" if c.max_rollbacks == 0 else "")
        )

    trainer = _make_trainer(ctx, Trainer, FitConfig, out, resume, overwrite, settings, settings["mode"], first_line)
    c = trainer.config
    trainer.run(progress=not quiet)
    _done(str(trainer.out))
    if (trainer.out / EVAL_SAMPLES).is_file():
        click.echo(f"FID of its samples: hatrefine eval --samples {trainer.out / EVAL_SAMPLES} --data {c.data}")


def _make_trainer(
    ctx: click.Context, trainer_class, config_class, out: Optional[str], resume: bool, overwrite: bool, settings: dict, suffix: str = "", first_line=None
):
    """A new run from the command-line settings (``hatrefine.training.resolve``), or --resume with the saved ones.

    On --resume, options repeated with their saved values are fine; only --steps may change.
    Without --out, the run goes to ``runs/RECIPE`` or ``runs/GENERATOR-SUFFIX``. ``first_line(trainer)``,
    if given, is printed first, before the line naming the recipe."""
    from hatrefine.training.resolve import absolute_paths, default_run_dir, resolve

    given = {k: v for k, v in settings.items() if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    out = out or default_run_dir(config_class, settings, given, suffix)
    if resume:
        from hatrefine.files.jsonfiles import read_json

        cfg = read_json(Path(out) / CONFIG) if (Path(out) / CONFIG).is_file() else {}
        saved = cfg.get(getattr(config_class, "key", "")) or cfg.get("hatrefine") or cfg.get("autoencoder") or cfg.get("latent_prior") or {}
        given = absolute_paths(given)
        changed = [k for k, v in given.items() if k != "steps" and k in saved and saved[k] != v]
        if changed:
            flags = ", ".join(f"--{k.replace('_', '-')} ({saved[k]} -> {given[k]})" for k in changed)
            raise HatrefineError(f"{flags} cannot change on --resume; the run keeps the settings in {Path(out) / CONFIG} (only --steps may extend it)")
        trainer = trainer_class(None, out, resume=True, steps=given.get("steps"))
        if first_line:
            click.echo(first_line(trainer))
        return trainer
    resolved, recipe = resolve(config_class, settings, given), ""
    if resolved.recipe is not None:
        chosen = "" if "recipe" in given else f" (the recipe of {resolved.config.generator}; --recipe to choose another)"
        r = resolved.recipe
        recipe = f"recipe {r.name}{chosen}: {r.summary}; data {resolved.config.data}; source: {r.source}; options given override it"
    try:
        trainer = trainer_class(resolved, out, overwrite=overwrite)
    except HatrefineError:
        if recipe:
            click.echo(recipe)  # which recipe chose the settings that failed
        raise
    for line in (first_line(trainer) if first_line else "", recipe):
        if line:
            click.echo(line)
    return trainer


@main.command()
@_config_options(SynthesisConfig, exclude=("generator", "checkpoint", "mode", "eps_z", "z_prior_weight", "joint_update"))
@_training_options(
    "runs/mnist-synthesis", "Run directory (its generator/ is `dir:RUN_DIR`).", "Continue the run in --out exactly (bank, both networks, both optimizers)."
)
def synthesize(ctx: click.Context, out, resume, overwrite, quiet, **settings) -> None:
    """Learn a generator and a hat network together from scratch (tandem synthesis, conditional Hat EBM).

    The generator regresses onto past sampler outputs from a persistent bank of (Z, X) pairs
    and never sees data. Afterwards `hatrefine sample --run RUN_DIR` draws refined samples and
    `hatrefine generate --generator dir:RUN_DIR` the generator's own."""
    from hatrefine.training.synthesis import SynthesisTrainer

    trainer = _make_trainer(ctx, SynthesisTrainer, SynthesisConfig, out, resume, overwrite, settings)
    click.echo(f"tandem synthesis on {trainer.config.data} into {out} (device {trainer.device})")
    trainer.run(progress=not quiet)
    _done(out)


@main.command()
@_config_options(DistillConfig, exclude=("device", "log_every"))
@click.option("--device", default="auto", show_default=True)
@click.option("--out", required=True, help="The distilled generator's directory (load it as dir:OUT).")
@click.option("--resume", is_flag=True, help="Continue the distillation in --out exactly (only --steps may change).")
@click.option("--overwrite", is_flag=True, help="Replace an existing directory in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def distill(ctx: click.Context, out, resume, overwrite, quiet, **settings) -> None:
    """Learn a latent map T so that G(T(z)) samples like a fitted run's refined chains, at one generator pass.

    The output is a generator directory: every command takes it as --generator dir:OUT."""
    from hatrefine.training.distill import DistillTrainer

    trainer = _make_trainer(ctx, DistillTrainer, DistillConfig, out, resume, overwrite, settings)
    c = trainer.config
    click.echo(
        f"distilling {c.run} ({trainer.generator.name}, sampling at T {trainer.refiner.sampling.temperature:g}, K {trainer.refiner.sampling.langevin_steps}) into {out} "
        f"by {c.method}; T has {100 * trainer.parameters_share:.1f}% of the generator's parameters; {c.steps} updates at batch {c.batch_size}"
    )
    trainer.run(progress=not quiet)
    _done(out)
    click.echo(f"use it as --generator dir:{out}")


@main.command("fit-prior")
@_config_options(PriorConfig)
@_training_options(
    None,
    "Run directory (default: runs/GENERATOR-prior: runs/mnist-prior for the embedded GAN).",
    "Continue the run in --out exactly (energy, optimizer, chains).",
)
def fit_prior(ctx: click.Context, out, resume, overwrite, quiet, **settings) -> None:
    """Fit a latent-space EBM prior on a frozen generator (Pang et al. 2020): the rival to the Hat EBM.

    p(z) ~ exp(f(z)) N(0, I), learned by maximum likelihood with posterior and prior Langevin chains;
    sample, refine, ood and push work on the run. With --resume only --steps may change."""
    from hatrefine.training.prior_trainer import PriorTrainer

    trainer = _make_trainer(ctx, PriorTrainer, PriorConfig, out, resume, overwrite, settings, "prior")
    click.echo(f"fitting a latent EBM prior on {trainer.config.generator} with {trainer.config.data} into {trainer.out} (device {trainer.device})")
    trainer.run(progress=not quiet)
    _done(str(trainer.out))


@main.command()
@_config_options(HierarchicalConfig, exclude=("generator", "checkpoint"))
@_training_options("runs/mnist-hierarchical", "Run directory (its generator is `dir:RUN`).", "Continue the run in --out exactly (every network and optimizer).")
def hierarchical(ctx: click.Context, out, resume, overwrite, quiet, **settings) -> None:
    """Learn a multi-layer generator with its joint latent EBM prior from scratch (Cui, Wu, Han 2023).

    The generator is saved as a generator directory: `dir:RUN` works with every command (fit included);
    the run is a latent-prior run for sample, refine, ood and push."""
    from hatrefine.training.hierarchical import HierarchicalTrainer

    trainer = _make_trainer(ctx, HierarchicalTrainer, HierarchicalConfig, out, resume, overwrite, settings)
    click.echo(
        f"learning a {len(trainer.config.sizes())}-layer generator with its joint latent EBM prior on {trainer.config.data} into {out} (device {trainer.device})"
    )
    trainer.run(progress=not quiet)
    _done(out)


def _shape(value: str, what: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise HatrefineError(f"{what} {value!r} is not C,H,W (e.g. 1,16,16)") from None


@main.command("pretrain-ae")
@click.option(
    "--recipe",
    default=None,
    help="Start from one of the paper's experiments (`hatrefine recipes`, e.g. cifar10-retrofit); options given explicitly override its values.",
)
@click.option("--data", default="builtin:mnist", show_default=True, help="Data spec to learn to reconstruct.")
@click.option("--data-root", default=None, help="Where torchvision datasets are.")
@click.option("--out", default="runs/mnist-ae", show_default=True, help="Autoencoder directory (load its decoder as ae:DIR).")
@click.option("--image-shape", default="1,32,32", show_default=True, help="C,H,W the data are converted to.")
@click.option("--latent-shape", default="1,16,16", show_default=True, help="C,H,W of the image-shaped latent.")
@click.option("--width", type=int, default=32, show_default=True, help="Base width of encoder and decoder.")
@click.option("--steps", type=int, default=1500, show_default=True, help="Adam updates.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Adam learning rate.")
@click.option("--latent-noise", type=float, default=0.02, show_default=True, help="Std of the Gaussian noise on the latent during training.")
@click.option("--gen-factor", type=float, default=2.0, show_default=True, help="The decoder's output is gen_factor * tanh (the authors' 2).")
@click.option(
    "--decoder",
    type=click.Choice(["conv", "resnet"]),
    default="conv",
    show_default=True,
    help="conv: hatrefine's decoder; resnet: the authors' ResNet gen_decoder (latent side x 2; the cifar10-retrofit recipe's).",
)
@click.option(
    "--batch-norm",
    type=click.Choice(["fixed", "batch"]),
    default="fixed",
    show_default=True,
    help="The resnet decoder's batch norm while pretraining: fixed, as the authors (inference mode throughout: statistics stay 0 and 1, scale and shift learn), or batch statistics.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--save-every", type=int, default=500, show_default=True, help="Checkpoint every N steps.")
@click.option(
    "--tensorboard/--no-tensorboard",
    default=False,
    show_default=True,
    help="Also write the loss and the reconstruction grid to OUT/tensorboard for TensorBoard (pip install 'hatrefine[tensorboard]').",
)
@click.option("--resume", is_flag=True, help="Continue the autoencoder in --out exactly (only --steps may change).")
@click.option("--overwrite", is_flag=True, help="Replace an existing directory in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def pretrain_ae(ctx: click.Context, out, resume, overwrite, quiet, image_shape, latent_shape, **settings) -> None:
    """Pretrain a deterministic autoencoder for a retrofit (its encoder output lies on the sphere of radius sqrt(m)).

    Then: hatrefine fit --generator ae:OUT --mode joint --y-sigma 0.1"""
    from hatrefine.settings.autoencoder import AEConfig
    from hatrefine.training.autoencoder import AutoencoderTrainer

    settings |= {"image_shape": _shape(image_shape, "--image-shape"), "latent_shape": _shape(latent_shape, "--latent-shape")}
    trainer = _make_trainer(ctx, AutoencoderTrainer, AEConfig, out, resume, overwrite, settings)
    click.echo(f"pretraining an autoencoder on {trainer.config.data} into {out} (device {trainer.device})")
    trainer.run(progress=not quiet)
    click.echo(f"done: {out} (model.safetensors, reconstructions.png, prior_samples.png); retrofit it with: hatrefine fit --generator ae:{out} --mode joint")


def _run_options(f):
    f = click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")(f)
    f = click.option("--png", default=None, help="Also save a grid of the first 64 results.")(f)
    f = click.option("--device", default=None, help="Default: the run's device setting.")(f)
    f = click.option("--batch-size", type=int, default=256, show_default=True, help="Chains per chunk (bounds memory).")(f)
    f = click.option(
        "--eps-z",
        type=float,
        default=None,
        help="Step size on Z (default: the one training ended with, in the run's sampling.json; a latent-prior run: its prior chain's).",
    )(f)
    f = click.option("--eps-y", type=float, default=None, help="Step size on Y (default: the one training ended with, in the run's sampling.json).")(f)
    f = click.option(
        "--temperature", type=float, default=None, help="T, the energy is H / T (default: the run's, in sampling.json: calibrated or the config's test-time T)."
    )(f)
    f = click.option("--langevin-steps", type=int, default=None, help="K (default: the run's, in sampling.json: calibrated or the config's test-time K).")(f)
    f = click.option(
        "--checkpoint", default=None, help="With --run hatebm:NAME: the authors' release folder, downloaded by hand (converted once into the cache)."
    )(f)
    f = click.option("--seed", type=int, default=0, show_default=True)(f)
    f = click.option(
        "--run",
        "run_dir",
        required=True,
        help="Run directory of `hatrefine fit` (or synthesize, fit-prior, hierarchical), hf:ORG/NAME, or hatebm:NAME (the authors' released models).",
    )(f)
    return f


@main.command()
@_run_options
@click.option("--n", "n", type=int, default=64, show_default=True, help="Number of samples.")
@click.option("--out", required=True, help="Output .npz with x, z, y and g = G(z) (float32 NCHW, [-1, 1]).")
def sample(run_dir, seed, checkpoint, langevin_steps, temperature, eps_y, eps_z, batch_size, device, png, overwrite, n, out) -> None:
    """Draw refined samples from a fitted Hat EBM, streamed to disk in chunks.

    The same --seed and --batch-size give the same samples, on any number of processes
    (under torchrun each rank writes its chunks, rank 0 merges them)."""
    from hatrefine.distributed import setup
    from hatrefine.files.npz import NpzWriter, merge_chunk_shards
    from hatrefine.models.runs import load_run

    if n <= 0 or batch_size <= 0:
        raise HatrefineError(f"--n and --batch-size must be positive, got {n} and {batch_size}")
    _check_temperature(temperature)
    shard, dev = setup(device or "auto")
    _check_new_files(overwrite, out, png)
    shard.barrier()
    refiner = load_run(run_dir, device=dev if shard.world > 1 else device, checkpoint=checkpoint)
    G, first = refiner.generator, None
    shapes = {"x": G.image_shape, "z": G.latent_shape, "y": G.image_shape, "g": G.image_shape}
    sizes = [min(batch_size, n - s) for s in range(0, n, batch_size)]
    mine = sum(m for i, m in enumerate(sizes) if i % shard.world == shard.rank)
    target = out if shard.world == 1 else f"{out}.rank{shard.rank}.npz"
    from tqdm import tqdm

    chunks = refiner.iter_samples(n, seed=seed, batch_size=batch_size, n_steps=langevin_steps, shard=shard, temperature=temperature, eps_y=eps_y, eps_z=eps_z)
    with NpzWriter(target, mine, shapes) as w, tqdm(total=mine, desc="sample", unit="img", disable=not shard.main, dynamic_ncols=True) as bar:
        for res in chunks:
            w.write(x=res.x, z=res.z, y=res.y, g=res.g)
            first = res.x if first is None else first
            bar.update(len(res.x))
    shard.barrier()
    if not shard.main:
        return
    if shard.world > 1:
        merge_chunk_shards(out, [Path(f"{out}.rank{r}.npz") for r in range(shard.world)], n, batch_size)
    click.echo(f"wrote {n} refined samples to {out}")
    _write_png(first, png)


@main.command()
@_run_options
@click.option("--input", "input_path", required=True, help=".npz with x (images) and/or z (latents), or a folder of images (png, jpg, ...).")
@click.option("--out", required=True, help="Output .npz with x, z, y and g.")
@click.option(
    "--resize/--no-resize",
    default=True,
    show_default=True,
    help="Convert images of another size or channel count as fit --data does (centre crop, resize, gray <-> RGB); --no-resize refuses them.",
)
@click.option("--pixel-only", is_flag=True, help="Refine the residual Y only; Z stays fixed.")
@click.option("--invert-steps", type=int, default=200, show_default=True, help="Adam steps of latent inversion (images only).")
@click.option(
    "--start",
    type=click.Choice(["invert", "encoder"]),
    default="invert",
    show_default=True,
    help="Images only: latents by inversion (Adam on ||G(z) - x||^2) or from the generator's own encoder (a diffusers: VAE's).",
)
@click.option("--value-range", default=None, help="LOW,HIGH the input images are in, mapped to [-1, 1] (e.g. 0,1 or 0,255; default -1,1).")
def refine(
    run_dir,
    seed,
    checkpoint,
    langevin_steps,
    temperature,
    eps_y,
    eps_z,
    batch_size,
    device,
    png,
    overwrite,
    input_path,
    out,
    pixel_only,
    invert_steps,
    start,
    value_range,
    resize,
) -> None:
    """Improve samples you already have: from their latents, or from images alone (by inversion)."""
    from hatrefine.data import images_for, load_folder, parse_value_range
    from hatrefine.files.npz import read_npz, save_npz
    from hatrefine.models.runs import load_run

    _check_temperature(temperature)
    value_range = parse_value_range(value_range)
    _check_new_files(overwrite, out, png)
    folder = Path(input_path).is_dir()
    if folder and value_range is not None:
        raise HatrefineError("--value-range is for .npz inputs; images in a folder are read as 8-bit pictures (leave it out)")
    arrays = {} if folder else read_npz(input_path, optional=("x", "z"))
    if not folder and not arrays:
        raise HatrefineError(f"{input_path} holds neither 'x' (images) nor 'z' (latents); write at least one of them")
    refiner = load_run(run_dir, device=device, checkpoint=checkpoint)
    shape = tuple(refiner.generator.image_shape)
    if folder:
        arrays["x"] = load_folder(input_path, shape, convert=resize)
        click.echo(f"read {len(arrays['x'])} images from {input_path}")
    elif "x" in arrays:
        arrays["x"], notes = images_for(arrays["x"], shape, f"the images in {input_path}", value_range, convert=resize)
        value_range = None  # (mapped onto [-1, 1] now)
        for note in notes:
            click.echo(note)
    encoder = {"start": start} if start == "encoder" else {}  # (a latent-prior run's refine inverts only)
    res = refiner.refine(
        z=arrays.get("z"),
        x=arrays.get("x"),
        pixel_only=pixel_only,
        n_steps=langevin_steps,
        seed=seed,
        batch_size=batch_size,
        invert_steps=invert_steps,
        temperature=temperature,
        eps_y=eps_y,
        eps_z=eps_z,
        value_range=value_range,
        progress=True,
        **encoder,
    )
    save_npz(out, x=res.x, z=res.z, y=res.y, g=res.g)
    click.echo(f"wrote {len(res.x)} refined samples to {out}")
    _write_png(res.x, png)


@main.command()
@click.option("--run", "run_dir", required=True, help="Run directory of `hatrefine fit` / `synthesize`.")
@click.option("--n", "n", type=int, default=None, help="Samples per setting (default: the run's --calibration-samples).")
@click.option("--device", default=None, help="Default: the run's device setting.")
@click.option(
    "--metric",
    type=click.Choice(["quick", "inception"]),
    default="quick",
    show_default=True,
    help="Features to score in: quick (the shipped LeNet for 1x32x32 digits, what fit uses; Inception otherwise) or inception (FID's Inception; 10-30 minutes on a CPU).",
)
@click.option("--overwrite", is_flag=True, help="Replace a calibration the run already has.")
def calibrate(run_dir, n, device, metric, overwrite) -> None:
    """Choose a fitted run's test-time temperature and K on held-out data (what `fit` does at its end).

    Writes the choice to RUN/sampling.json (what sample and refine use) and the grid and scores under
    `calibration` in RUN/quality.json. Choosing again in other features (--metric) also says whether
    they agree with the earlier choice, and keeps it under `calibration.replaced`."""
    from hatrefine.evaluation.calibration import calibrate as run_calibration
    from hatrefine.files.checkpoint import lock_run_dir
    from hatrefine.files.jsonfiles import save_json
    from hatrefine.files.names import SAMPLING
    from hatrefine.files.quality import read_quality, write_quality
    from hatrefine.models.pretrained import run_directory
    from hatrefine.models.refiner import HatRefiner

    if not Path(run_dir).is_dir():
        raise HatrefineError(f"--run {run_dir} is not a run directory; calibrate a local run (`hatrefine fit --out`), not a Hub model")
    from hatrefine.models.latent_prior import is_prior_run

    if is_prior_run(run_directory(run_dir)):
        raise HatrefineError(
            f"{run_dir} is a latent-prior run: it samples at T 1 with its prior chain (set --langevin-steps and --eps-z on sample); calibrate applies to Hat EBM runs"
        )
    lock_run_dir(Path(run_dir))  # it writes into the run: not while a fit does
    refiner = HatRefiner.from_pretrained(run_dir, device=device)
    if refiner.sampling.chosen_by == "calibration" and not overwrite:
        raise HatrefineError(
            f"{run_dir} is already calibrated (T {refiner.sampling.temperature:.4g}, K {refiner.sampling.langevin_steps}); pass --overwrite to choose again"
        )
    c = refiner.config
    record = run_calibration(refiner, c.data, c.data_root, n=n or c.calibration_samples, seed=c.seed, metric=metric)
    sampling = refiner.sampling.calibrated(record)
    quality = read_quality(run_dir)
    before = quality.get("calibration", {})
    if "chosen" in before:
        record["replaced"] = {
            "metric": before["metric"],
            "n_samples": before["n_samples"],
            "chosen": before["chosen"],
            "agrees": before["chosen"] == record["chosen"],
        }
    save_json(Path(run_dir) / SAMPLING, sampling.to_dict())
    write_quality(run_dir, quality | {"calibration": record})
    for row in record["grid"]:
        click.echo(
            f"T {row['temperature']:.4g}  K {row['langevin_steps']:>4}  {record['metric']} FD {row['fd']:.3f}  recall {row['recall']:.3f}  coverage {row['coverage']:.3f}"
            + (f"  class changes {row['class_changed']:.3f}" if "class_changed" in row else "")
        )
    g = record["generator"]
    click.echo(f"generator: FD {g['fd']:.3f}  recall {g['recall']:.3f}  coverage {g['coverage']:.3f}")
    click.echo(
        f"chosen: T {sampling.temperature:.4g}, K {sampling.langevin_steps}"
        + ("" if record["keeps_recall"] else " (no setting kept the generator's recall and coverage)")
        + f"; wrote {Path(run_dir) / SAMPLING}"
    )
    if "replaced" in record:
        old, pick = record["replaced"], record["replaced"]["chosen"]
        verdict = (
            "the same choice"
            if old["agrees"]
            else ("the metrics disagree" if old["metric"] != record["metric"] else "another choice") + "; sampling now uses this one"
        )
        click.echo(f"before: {old['metric']} features chose T {pick['temperature']:.4g}, K {pick['langevin_steps']}: {verdict}")


BASELINE_DEFAULTS = {  # per method: the steps K and the step size its authors use
    "ddls": {"langevin_steps": 20, "eps": 0.1},
    "dot": {"langevin_steps": 10, "eps": 0.01},
    "dgflow": {"langevin_steps": 25, "eps": 0.1},
}


def _baseline_options(f):
    options = [
        click.option("--generator", "spec", default="builtin:mnist", show_default=True, help="Generator spec (`hatrefine list`)."),
        click.option("--checkpoint", default=None, help="Local weights file for the generator."),
        click.option(
            "--discriminator", required=True, help="Discriminator spec (builtin:mnist, mimicry:...) or a weights file for the generator's architecture."
        ),
        click.option("--n", "n", type=int, default=64, show_default=True, help="Number of samples."),
        click.option("--out", required=True, help="Output .npz: x = G(z) of the refined latents and z, float32, as `generate` writes."),
        click.option("--langevin-steps", type=int, default=None, help="K: Langevin steps (ddls, default 20), SGD steps (dot, 10) or flow steps (dgflow, 25)."),
        click.option(
            "--eps",
            type=float,
            default=None,
            help="Step size: ddls z <- z - eps^2/2 grad E + noise eps N(0, I) (default 0.1, DDLS's step 0.01); dot's SGD rate (0.01); dgflow's eta (0.1).",
        ),
        click.option("--noise", type=float, default=1.0, show_default=True, help="ddls: scale of the injected noise (1 = exact Langevin)."),
        click.option("--temperature", type=float, default=1.0, show_default=True, help="ddls: T in E(z) = ||z||^2/2 - d(G(z)) / T."),
        click.option(
            "--step-schedule",
            type=click.Choice(["constant", "linear", "cosine", "exponential"]),
            default="constant",
            show_default=True,
            help="ddls: step-size decay along the chain.",
        ),
        click.option("--step-schedule-end", type=float, default=1.0, show_default=True, help="ddls: step-size factor at the last step."),
        click.option("--proposals", type=int, default=640, show_default=True, help="mh: K, generator samples proposed per chain (the authors' 640)."),
        click.option(
            "--mh-start",
            type=click.Choice(["real", "generated"]),
            default="real",
            show_default=True,
            help="mh: start each chain at a real image of --data (the authors'; it is never output) or at its first proposal.",
        ),
        click.option(
            "--gamma-percentile",
            type=float,
            default=95.0,
            show_default=True,
            help="drs: gamma is this percentile of F per batch (the MH-GAN authors' DRS baseline).",
        ),
        click.option("--exact", is_flag=True, help="drs: gamma = 0, exact rejection sampling of p_g * exp(l) (low acceptance)."),
        click.option(
            "--burn-in", type=int, default=10000, show_default=True, help="drs: generator samples whose largest log ratio starts the running maximum."
        ),
        click.option("--entropy", type=float, default=0.01, show_default=True, help="dgflow: gamma, the entropy regulariser (noise sqrt(2 eta gamma))."),
        click.option("--divergence", type=click.Choice(["kl", "logd", "js"]), default="kl", show_default=True, help="dgflow: the f-divergence of the flow."),
        click.option(
            "--calibrate/--no-calibrate",
            default=None,
            help="Fit a logistic head on the logit (real vs generated images of --data) and use l = a d + b (default: on for drs and mh, off for ddls, dot and dgflow, as their authors).",
        ),
        click.option("--data", default="builtin:mnist", show_default=True, help="Real images for the calibration and for mh's chain starts (data spec)."),
        click.option("--data-root", default=None, help="Where torchvision datasets are."),
        click.option("--calibrate-n", type=int, default=1000, show_default=True, help="Real images (and as many generated) for --calibrate."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--batch-size", type=int, default=256, show_default=True, help="Chains or proposals per chunk (bounds memory)."),
        click.option("--device", default="auto", show_default=True),
        click.option("--png", default=None, help="Also save a grid of the first 64 samples."),
        click.option("--overwrite", is_flag=True, help="Replace --out if it exists."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command()
@click.option("--method", type=click.Choice(["ddls", "drs", "mh", "dot", "dgflow"]), default="ddls", show_default=True, help="Which refiner (docs/method.md).")
@_baseline_options
def baseline(method, **options) -> None:
    """A post-hoc GAN refiner that needs only the discriminator: ddls (Langevin on ||z||^2/2 - d(G(z))/T),
    drs (rejection sampling), mh (Metropolis-Hastings GAN), dot (latent optimal transport), dgflow (gradient flow)."""
    _baseline(method, **options)


@main.command()
@_baseline_options
def ddls(**options) -> None:
    """DDLS baseline: Langevin in latent space on E(z) = ||z||^2/2 - d(G(z)) / T (= baseline --method ddls)."""
    _baseline("ddls", **options)


def _baseline(
    method, spec, checkpoint, discriminator, n, out, langevin_steps, eps, noise, temperature, step_schedule, step_schedule_end, proposals, mh_start,
    gamma_percentile, exact, burn_in, entropy, divergence, calibrate, data, data_root, calibrate_n, seed, batch_size, device, png, overwrite,
) -> None:  # fmt: skip
    from hatrefine.data import load_images
    from hatrefine.distributed import resolve_device
    from hatrefine.files.npz import NpzWriter, save_npz
    from hatrefine.networks.registry import load_generator, resolve_discriminator
    from hatrefine.sampling.density_ratio import calibrate as fit_calibration
    from hatrefine.sampling.ratio_refiners import baseline as make_baseline
    from hatrefine.settings.config import Schedule

    defaults = BASELINE_DEFAULTS.get(method, {})
    langevin_steps = defaults.get("langevin_steps") if langevin_steps is None else langevin_steps
    eps = defaults.get("eps") if eps is None else eps
    if temperature <= 0 or (eps is not None and eps <= 0) or n <= 0 or batch_size <= 0:
        raise HatrefineError(f"--temperature, --eps, --n and --batch-size must be positive, got {temperature}, {eps}, {n} and {batch_size}")
    _check_new_files(overwrite, out, png)
    dev = resolve_device(device)
    G = load_generator(spec, checkpoint).to(dev)
    D = resolve_discriminator(discriminator, spec).to(dev)
    calibration, real = None, None
    if calibrate if calibrate is not None else method in ("drs", "mh"):
        real = load_images(data, G.image_shape, split="train", root=data_root, limit=calibrate_n)
        calibration = fit_calibration(G, D, real, seed=seed, batch_size=batch_size)
        click.echo(f"calibrated logit: sigmoid({calibration.scale:.4g} * d + {calibration.bias:.4g}); discriminator temperature {calibration.temperature:.4g}")
    if method == "mh" and mh_start == "real" and real is None:
        real = load_images(data, G.image_shape, split="train", root=data_root, limit=calibrate_n)
    options = {
        "ddls": {
            "n_steps": langevin_steps,
            "eps": eps,
            "temperature": temperature,
            "noise": noise,
            "step_schedule": Schedule(step_schedule, step_schedule_end),
        },
        "drs": {"burn_in": burn_in, "gamma_percentile": None if exact else gamma_percentile},
        "mh": {"n_proposals": proposals},
        "dot": {"n_steps": langevin_steps, "lr": eps, "seed": seed},
        "dgflow": {"n_steps": langevin_steps, "eta": eps, "gamma": entropy, "divergence": divergence},
    }[method]
    sampler = make_baseline(method, G, D, calibration, real=real if mh_start == "real" else None, **options)
    if method == "ddls":  # chains streamed to disk chunk by chunk
        first = None
        with NpzWriter(out, n, {"x": G.image_shape, "z": G.latent_shape}) as w:
            for res in sampler.iter_samples(n, seed=seed, batch_size=batch_size):
                w.write(x=res.x, z=res.z)
                first = res.x if first is None else first
        click.echo(f"wrote {n} DDLS samples ({langevin_steps} steps) to {out}")
        return _write_png(first, png)
    res = sampler.sample(n, seed=seed, batch_size=batch_size)
    save_npz(out, x=res.x, z=res.z)
    counts = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in res.stats.items())
    click.echo(f"wrote {n} {method} samples ({counts}) to {out}")
    _write_png(res.x, png)


@main.command()
@click.option("--run", "run_dir", required=True, help="Run directory of `hatrefine fit` / `synthesize` / `fit-prior` / `hierarchical`, or hf:ORG/NAME.")
@click.option("--in-data", required=True, help="The data the run was fitted on (its --split is scored).")
@click.option(
    "--ood-data",
    multiple=True,
    required=True,
    help="An out-of-distribution data spec; repeat for several (e.g. invert:builtin:mnist, sklearn:digits, noise:gaussian).",
)
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True, help="Split of each data set to score.")
@click.option("--n", "n", type=int, default=None, help="Score at most N images of each set.")
@click.option("--data-root", default=None, help="Where torchvision datasets are.")
@click.option("--json", "json_out", default=None, help="Also write energies summary and AUROCs as JSON.")
@click.option("--plot", default="ood_energies.png", show_default=True, help="Histogram of the energies of every set.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", default=None, help="Default: the run's device setting.")
@click.option("--overwrite", is_flag=True, help="Replace --json / --plot if they exist.")
def ood(run_dir, in_data, ood_data, split, n, data_root, json_out, plot, batch_size, device, overwrite) -> None:
    """Score images by the hat network's energy H(x) / T and report the AUROC of each OOD set.

    Higher energy = more out of distribution; AUROC 1.0 separates perfectly, 0.5 not at all."""
    from hatrefine.evaluation.ood import ood_scores
    from hatrefine.evaluation.report import energy_histogram
    from hatrefine.files.jsonfiles import save_json
    from hatrefine.models.runs import load_run

    if (n is not None and n <= 0) or batch_size <= 0:
        raise HatrefineError(f"--n and --batch-size must be positive, got {n} and {batch_size}")
    _check_new_files(overwrite, json_out, plot)
    refiner = load_run(run_dir, device=device)
    summary, scores = ood_scores(refiner, in_data, list(ood_data), split=split, n=n, data_root=data_root, batch_size=batch_size)
    summary["run"] = run_dir
    ind = summary["in_data"]
    click.echo(f"in-distribution {in_data} ({split}, {ind['n']} images): mean energy {ind['mean_energy']:.4g}")
    for row in summary["ood"]:
        click.echo(f"  {row['data']:<28} {row['n']:>6} images  mean energy {row['mean_energy']:.4g}  AUROC {row['auroc']:.4f}")
    energy_histogram(scores, plot, {r["data"]: r["auroc"] for r in summary["ood"]})
    click.echo(f"wrote {plot}")
    if json_out:
        save_json(json_out, summary)
        click.echo(f"wrote {json_out}")


@main.command()
@click.option("--run", "run_dir", required=True, help="Run directory of `hatrefine fit` / `synthesize` / `fit-prior` / `hierarchical`.")
@click.option("--repo", required=True, help="Hub repository ORG/NAME (created if missing).")
@click.option("--fid", "fid_json", default=None, help="A `hatrefine eval --json` result to quote in the model card.")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--token", default=None, help="Hub token (default: the one `hf auth login` stored).")
@click.option("--message", default="Upload Hat EBM", show_default=True, help="Commit message.")
def push(run_dir, repo, fid_json, private, token, message) -> None:
    """Upload a fitted Hat EBM (weights, config, model card, sample grid) to the Hugging Face Hub.

    Load it anywhere with `hatrefine sample --run hf:ORG/NAME` or HatRefiner.from_pretrained("hf:ORG/NAME")."""
    from hatrefine.files.jsonfiles import read_json
    from hatrefine.models.hub import push as push_run

    fid = read_json(fid_json) if fid_json else None
    if fid is not None and "fid" not in fid:
        raise HatrefineError(f"{fid_json} holds no 'fid'; pass the --json output of `hatrefine eval`")
    url = push_run(run_dir, repo, private=private, token=token, fid=fid, message=message)
    click.echo(f"pushed {run_dir} to {url}")


@main.command("eval")
@click.option("--samples", required=True, help=".npz with x: images (N, C, H, W) in [-1, 1], as generate/sample/ddls write.")
@click.option(
    "--data", default="builtin:mnist", show_default=True, help="Reference data spec: builtin:mnist, cifar10/mnist/svhn/celeba, a .npz or an image folder."
)
@click.option("--split", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--n", "n", type=int, default=None, help="Use the first N samples (default: all).")
@click.option("--n-ref", type=int, default=None, help="Use the first N reference images (default: the whole split).")
@click.option("--data-root", default=None, help="Where torchvision datasets are.")
@click.option(
    "--inception",
    type=click.Choice(["auto", "pytorch-fid", "fid-helper"]),
    default="auto",
    show_default=True,
    help="Where the Inception weights come from (auto: whichever is on disk).",
)
@click.option("--json", "json_out", default=None, help="Also write the result as JSON.")
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--overwrite", is_flag=True, help="Replace --json if it exists.")
@click.option("--value-range", default=None, help="LOW,HIGH the sample images are in, mapped to [-1, 1] (e.g. 0,1 or 0,255; default -1,1).")
def eval_cmd(samples, data, split, n, n_ref, data_root, inception, json_out, batch_size, device, quiet, overwrite, value_range) -> None:
    """FID between samples and data (pytorch-fid's Inception and Frechet distance), with precision, recall,
    density and coverage in the same features; for 1x32x32 digits and 3x32x32 colour images also the shipped
    classifier's distance and class histogram (LeNet, emoji classifier).

    The data's statistics (and the features of its first 5,000 images) are cached in $HATREFINE_CACHE or
    ~/.cache/hatrefine/fid."""
    from hatrefine.data import parse_value_range, to_unit_range
    from hatrefine.distributed import resolve_device, setup
    from hatrefine.evaluation.inception import load_inception
    from hatrefine.evaluation.metrics import check_set_size, fid, quick_net
    from hatrefine.files.jsonfiles import save_json
    from hatrefine.files.npz import read_npz

    for name, v in (("--n", n), ("--n-ref", n_ref), ("--batch-size", batch_size)):
        if v is not None and v < 2:
            raise HatrefineError(f"{name} must be at least 2, got {v}")
    shard, device = setup(device)
    _check_new_files(overwrite, json_out)
    shard.barrier()
    x = read_npz(samples, required=("x",))["x"]
    if x.dim() != 4:
        raise HatrefineError(f"{samples}: x has shape {tuple(x.shape)}; expected images (N, C, H, W)")
    x = to_unit_range(x[:n] if n else x, f"the images in {samples}", parse_value_range(value_range), slack=0.5)  # refined samples overshoot
    check_set_size(len(x), f"sample images in {samples}", "pass a file with more samples")  # before Inception loads
    net = load_inception(inception, resolve_device(device))
    result = fid(x, data, net, split=split, n_reference=n_ref, data_root=data_root, batch_size=batch_size, progress=not quiet, shard=shard)
    if not shard.main:
        return
    result["samples"] = samples
    click.echo(
        f"FID {result['fid']:.3f}  ({result['n_samples']} samples vs {result['n_reference']} {data} {split} images; Inception from {result['inception']})"
    )
    click.echo(
        "precision {precision:.3f}  recall {recall:.3f}  density {density:.3f}  coverage {coverage:.3f}  (Inception features, k = 5, ".format(**result)
        + f"against {result['n_prdc_reference']} data images)"
    )
    spec = quick_net(x.shape[1:])
    if spec is not None:  # the quick classifier's distance and class histogram beside FID
        from hatrefine.data import load_images
        from hatrefine.evaluation.metrics import class_histogram, class_probabilities, classifier_fd, load_classifier

        net = load_classifier(x.shape[1:])
        result[f"{spec.name}_fd"] = classifier_fd(x, load_images(data, tuple(x.shape[1:]), split=split, root=data_root, limit=n_ref), net)
        result[f"{spec.name}_classes"] = classes = class_histogram(class_probabilities(x, net))
        click.echo(
            f"{spec.label} distance {result[f'{spec.name}_fd']:.3f}; {spec.label} classes {classes['frequencies']} (label entropy {classes['label_entropy']}, confidence {classes['confidence']})"
        )
    if json_out:
        save_json(json_out, result)
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
