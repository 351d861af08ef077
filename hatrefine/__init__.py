"""hatrefine: a Hat EBM on top of any frozen pretrained image generator."""

from .errors import HatrefineError
from .generator import Generator
from .refiner import HatRefiner
from .registry import create_architecture, known_specs, load_discriminator, load_generator

__version__ = "0.1.0"
__all__ = ["HatrefineError", "Generator", "HatRefiner", "load_generator", "load_discriminator", "known_specs", "create_architecture"]
