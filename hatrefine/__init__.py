"""hatrefine: a Hat EBM on top of any frozen pretrained image generator."""

from importlib.metadata import version

from .errors import HatrefineError, HatrefineWarning
from .generator import Generator
from .latent_prior import LatentPriorRefiner
from .prior_trainer import fit_prior
from .refiner import HatRefiner
from .registry import create_architecture, known_specs, load_discriminator, load_generator
from .runs import load_run
from .trainer import fit

__version__ = version("hatrefine")
__all__ = ["HatrefineError", "HatrefineWarning", "Generator", "HatRefiner", "fit", "LatentPriorRefiner", "fit_prior", "load_run", "load_generator", "load_discriminator", "known_specs", "create_architecture"]
