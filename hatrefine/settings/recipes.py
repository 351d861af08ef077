"""Recipes: the paper's experiments by name (``hatrefine recipes``, ``--recipe NAME``).

A recipe is the authors' settings for one experiment, per command (``fit``, ``synthesize``,
``pretrain-ae``), with where they come from (the paper's section and the authors' config
files in point0bar1/hat-ebm: ``configs_joint/``, ``configs_synth/`` for training and
``fid/fid_config_*.py`` for test-time K, T, residual prior and initial residual scale) and
what hatrefine does differently. Options given explicitly override a recipe's values; a
generator spec with a known recipe (``GENERATOR_RECIPES``) selects it by default. The run's
``config.json`` records the recipe's name and every resolved value.

The authors sample with the raw weights of H (``ema`` 0 here) at fixed test-time K and T
(``calibrate`` off), without the gradient penalty hatrefine adds for its own default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from hatrefine.errors import HatrefineError

COMMANDS = ("fit", "synthesize", "pretrain-ae", "hierarchical")


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    source: str
    settings: dict  # command -> {setting: value}
    differs: tuple = field(default=())  # where hatrefine departs from the authors' run


# What every paper recipe shares: the authors' batch, optimiser, y-step clipping (2.5 per
# sample, in training) and sampling with raw weights at fixed test-time settings.
_PAPER = {
    "batch_size": 128, "adam_beta1": 0.9, "y_clip": 2.5, "ema": 0.0, "calibrate": False, "grad_penalty": 0.0, "lr_schedule": "constant", "noise": 1.0,
    "y_clip_test": math.inf,  # the authors' FID chains ran unclipped (their config set the flag under a key the sampler does not read)
    "max_rollbacks": 0, "max_energy_growth": math.inf,  # no divergence guard, as the authors: a non-finite step ends the run instead of changing lr and steps
}  # fmt: skip
_REFINE = _PAPER | {
    "mode": "joint",
    "joint_update": "alternate",
    "steps": 25000,
    "lr": 1e-5,
    "eps_y": 1e-4,
    "eps_z": 5e-3,
    "data_noise": 1e-3,
    "z_prior_weight": 0.0,
    "init_scale_res": 0.0,
}
_SYNTH = _PAPER | {
    "steps": 50000,
    "lr": 1e-4,
    "generator_lr": 1e-4,
    "generator_loss_weight": 1000.0,
    "bank_size": 10000,
    "langevin_steps": 50,
    "eps_y": 5e-4,
    "temperature": 1e-8,
    "data_noise": 1e-3,
    "gen_factor": 2.0,
    "init_scale_res": 0.01,
}
_GUARD = "the authors' runs have no divergence guard; a recipe runs without one too (no rollback changes the learning rate or the step sizes), but a non-finite step or a residual past --max-residual-rms ends it with one line instead of writing NaN weights"

EMBEDDED_RECIPES = ("mnist", "twemoji")  # hatrefine's own defaults for its embedded GANs, not experiments of the paper

RECIPES = {
    r.name: r
    for r in (
        Recipe(
            "mnist",
            "the embedded default: the embedded MNIST GAN refined on the 4,500 embedded training digits (2 CPU cores, under 10 minutes)",
            "hatrefine's own (docs/results.md); not an experiment of the paper",
            {"fit": {}, "synthesize": {}, "pretrain-ae": {}},
        ),
        Recipe(
            "twemoji",
            "the colour embedded default: the embedded emoji GAN (builtin:twemoji) refined on its 3,385 training emoji (2 CPU cores, under 20 minutes)",
            "hatrefine's own (docs/results.md, 'Colour'); not an experiment of the paper",
            {
                "fit": {"generator": "builtin:twemoji", "steps": 300, "langevin_steps": 10, "calibration_samples": 400},
                "pretrain-ae": {"data": "builtin:twemoji", "image_shape": [3, 32, 32]},
                "synthesize": {"data": "builtin:twemoji", "image_shape": "3,32,32", "generator_arch": "dcgan", "hat": "small"},
            },
        ),
        Recipe(
            "cifar10-refine",
            "refine Mimicry's SN-GAN on CIFAR-10 (joint Hat EBM)",
            "paper section 5.1, Table 1; configs_joint/cifar10_refine.py, fid/fid_config_cifar10_refine.py",
            {
                "fit": _REFINE
                | {
                    "generator": "mimicry:sngan_cifar10",
                    "data": "cifar10",
                    "hat": "sngan32",
                    "hat_block": "authors",
                    "langevin_steps": 250,
                    "langevin_steps_test": 350,
                    "temperature": 1e-3,
                    "y_sigma": None,
                    "y_sigma_test": 0.25,
                }
            },
            ("the authors refined their own TensorFlow SN-GAN, hatrefine Mimicry's PyTorch one (theirs, with their hat: hatebm:cifar10_refine)", _GUARD),
        ),
        Recipe(
            "celeba64-refine",
            "refine Mimicry's SN-GAN on CelebA 64x64 (joint Hat EBM)",
            "paper section 5.1, Table 1; configs_joint/celeb_a_refine.py, fid/fid_config_celeb_a_refine.py",
            {
                "fit": _REFINE
                | {
                    "generator": "mimicry:sngan_celeba64",
                    "data": "celeba",
                    "hat": "sngan64",
                    "hat_block": "authors",
                    "langevin_steps": 100,
                    "langevin_steps_test": 125,
                    "temperature": 1e-6,
                    "y_sigma": None,
                    "y_sigma_test": None,
                }
            },
            ("the authors refined their own TensorFlow SN-GAN, hatrefine Mimicry's PyTorch one (theirs, with their hat: hatebm:celeba64_refine)", _GUARD),
        ),
        Recipe(
            "cifar10-retrofit",
            "pretrain a CIFAR-10 autoencoder, then sample from its decoder with a joint Hat EBM (pretrain-ae --out runs/cifar10-ae, then fit: its generator is ae:runs/cifar10-ae)",
            "paper section 5.2; configs_joint/cifar10_ae.py, configs_joint/cifar10_retrofit.py, fid/fid_config_cifar10_retrofit.py",
            {
                "pretrain-ae": {
                    "data": "cifar10",
                    "image_shape": [3, 32, 32],
                    "latent_shape": [1, 16, 16],
                    "width": 128,
                    "steps": 49900,
                    "batch_size": 128,
                    "lr": 1e-4,
                    "latent_noise": 0.02,
                    "gen_factor": 2.0,
                    "decoder": "resnet",
                },
                "fit": _PAPER
                | {
                    "generator": "ae:runs/cifar10-ae",
                    "data": "cifar10",
                    "mode": "joint",
                    "joint_update": "alternate",
                    "hat": "sngan32",
                    "hat_block": "authors",
                    "steps": 25000,
                    "lr": 1e-4,
                    "langevin_steps": 100,
                    "langevin_steps_test": 125,
                    "eps_y": 5e-4,
                    "eps_z": 1e-3,
                    "temperature": 1e-3,
                    "y_sigma": 0.1,
                    "y_sigma_test": 0.1,
                    "data_noise": 1e-2,
                    "init_scale_res": 0.01,
                },
            },
            (
                "the decoder is the authors' ResNet gen_decoder (--decoder resnet, 256 channels: width 128 doubled once, their ngf); the encoder is hatrefine's convolutional one, not their inf_encoder (their trained decoder and hat: hatebm:cifar10_retrofit)",
                "the authors' autoencoder loss is 1000 x MSE; hatrefine's is MSE (Adam is nearly invariant to the scale)",
                _GUARD,
            ),
        ),
        Recipe(
            "cifar10-synth",
            "learn a generator and a hat network together from scratch on CIFAR-10 (tandem synthesis)",
            "paper section 5.3; configs_synth/cifar10_synth.py, fid/fid_config_cifar10_synth.py",
            {
                "synthesize": _SYNTH
                | {
                    "data": "cifar10",
                    "image_shape": "3,32,32",
                    "generator_arch": "sngan32",
                    "hat": "sngan32",
                    "hat_block": "authors",
                    "langevin_steps_test": 125,
                    "temperature_test": 1e-3,
                }
            },
            ("the authors' FID config samples at T 1e-3 against 1e-8 in training (kept as written; it may be a typo in their config)", _GUARD),
        ),
        Recipe(
            "celeba64-synth",
            "tandem synthesis from scratch on CelebA 64x64",
            "paper section 5.3; configs_synth/celeb_a_synth.py, fid/fid_config_celeb_a_synth.py",
            {
                "synthesize": _SYNTH
                | {
                    "data": "celeba",
                    "image_shape": "3,64,64",
                    "generator_arch": "sngan64",
                    "hat": "sngan64",
                    "hat_block": "authors",
                    "langevin_steps_test": 100,
                    "temperature_test": 1e-8,
                }
            },
            (_GUARD,),
        ),
        Recipe(
            "imagenet128-synth",
            "tandem synthesis from scratch on ImageNet 128x128 (pass --data: an ImageNet training image folder)",
            "paper section 5.3; configs_synth/imagenet_synth.py, fid/fid_config_imagenet_synth.py",
            {
                "synthesize": _SYNTH
                | {
                    "data": None,
                    "image_shape": "3,128,128",
                    "data_crop": "random",
                    "generator_arch": "sngan128",
                    "hat": "sngan128",
                    "hat_block": "authors",
                    "steps": 300000,
                    "generator_lr": 5e-5,
                    "lr_schedule": "step:230000:260000",
                    "grad_clip": 50.0,
                    "langevin_steps_test": 150,
                    "temperature_test": 1e-8,
                }
            },
            (
                "the authors drop H's learning rate to 1e-5 at update 230,000 and 1e-6 at 260,000 (as step:230000:260000 here) and G's from 5e-5 to 1e-5 and 1e-6; hatrefine's schedule divides both by 10 at each drop, so G goes 5e-5, 5e-6, 5e-7",
                "the authors clip each gradient tensor of H at norm 50; hatrefine's --grad-clip 50 clips the total norm",
                _GUARD,
            ),
        ),
        Recipe(
            "cifar10-hierarchical",
            "a two-layer generator with its joint latent EBM prior, learned from scratch on CIFAR-10 (Cui, Wu, Han 2023)",
            "Cui, Wu, Han, CVPR 2023, joint training on CIFAR-10 (jcui1224/hierarchical-joint-ebm)",
            {
                "hierarchical": {
                    "data": "cifar10",
                    "channels": 3,
                    "latent_sizes": "128,100",
                    "conditional_width": 200,
                    "image_width": 64,
                    "energy_layers": "3x200,2x100",
                    "prior_steps": 60,
                    "prior_step_size": 0.4,
                    "posterior_steps": 40,
                    "posterior_step_size": 0.1,
                    "sigma": 0.3,
                    "lr": 2e-5,
                    "generator_lr": 1e-4,
                    "adam_beta1": 0.9,
                    "batch_size": 100,
                }
            },
            (
                "the authors' image generator is their transposed-conv network (ngf 64); hatrefine's DCGAN generator at width 64 has the same kind of layers, not their exact layout",
                "hatrefine caps the conditionals' log std at 1 (an unbounded std let the prior chain blow up in a measured run)",
            ),
        ),
    )
}

GENERATOR_RECIPES = {
    "builtin:twemoji": "twemoji",
    "mimicry:sngan_cifar10": "cifar10-refine",
    "mimicry:sngan_celeba64": "celeba64-refine",
    "hatebm:cifar10_refine": "cifar10-refine",
    "hatebm:celeba64_refine": "celeba64-refine",
    "hatebm:cifar10_retrofit": "cifar10-retrofit",
}


def find_recipe(name: str) -> Recipe:
    """The recipe ``name``; a one-line error naming the choices otherwise."""
    if name not in RECIPES:
        raise HatrefineError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)} (`hatrefine recipes`)")
    return RECIPES[name]


def get_recipe(name: str, command: str) -> Recipe:
    """The recipe ``name`` for ``command``; a one-line error if it has no settings for it."""
    recipe = find_recipe(name)
    if command not in recipe.settings:
        runs = " and ".join(f"`hatrefine {c} --recipe {name}`" for c in recipe.settings)
        raise HatrefineError(f"recipe {name} has no settings for `hatrefine {command}`; it runs as {runs}")
    return recipe


def apply_recipe(command: str, settings: dict, given: set) -> tuple[dict, Optional[Recipe]]:
    """``settings`` (every option of ``command``) with the recipe's values for those not in
    ``given`` (the options the user set). The recipe is ``settings["recipe"]`` or, for
    ``fit``, the one of the generator spec (``GENERATOR_RECIPES``); none: unchanged."""
    name = settings.get("recipe")
    if name is None and command == "fit":
        name = GENERATOR_RECIPES.get(settings.get("generator"))
    if name is None:
        return settings, None
    recipe = get_recipe(name, command)
    resolved = dict(settings) | {k: v for k, v in recipe.settings[command].items() if k not in given} | {"recipe": name}
    if command == "synthesize" and resolved.get("data") is None:
        raise HatrefineError(f"recipe {name} needs --data: {recipe.summary}")
    return resolved, recipe
