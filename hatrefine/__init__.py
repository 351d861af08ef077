"""hatrefine: a Hat EBM on top of any frozen pretrained image generator."""

from importlib.metadata import version

from .errors import HatrefineError, HatrefineWarning
from .generator import Generator
from .refiner import HatRefiner
from .registry import create_architecture, known_specs, load_discriminator, load_generator
from .trainer import fit

__version__ = version("hatrefine")
__all__ = ["HatrefineError", "HatrefineWarning", "Generator", "HatRefiner", "fit", "load_generator", "load_discriminator", "known_specs", "create_architecture"]
