"""hatrefine: a Hat EBM on top of any frozen pretrained image generator.

The public names load on first use (as diffusers' do), so ``import hatrefine`` and
``hatrefine --help`` stay fast and loading a generator never imports training code.
"""

from importlib import import_module
from importlib.metadata import version

from hatrefine.errors import HatrefineError, HatrefineWarning

_PUBLIC = {
    "Generator": "hatrefine.networks.generator",
    "HatRefiner": "hatrefine.models.refiner",
    "LatentPriorRefiner": "hatrefine.models.latent_prior",
    "load_run": "hatrefine.models.runs",
    "fit": "hatrefine.training.trainer",
    "fit_prior": "hatrefine.training.prior_trainer",
    "distill": "hatrefine.training.distill",
    "load_generator": "hatrefine.networks.registry",
    "load_discriminator": "hatrefine.networks.registry",
    "known_specs": "hatrefine.networks.registry",
    "create_architecture": "hatrefine.networks.registry",
}

__version__ = version("hatrefine")
__all__ = ["HatrefineError", "HatrefineWarning", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'hatrefine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
