"""``py:MODULE:FACTORY``: a generator defined in your own Python code, reachable from the CLI.

The ``module:attribute`` convention of uvicorn and setuptools entry points: ``FACTORY`` in the
importable module ``MODULE`` (``package.module`` works; the current directory is searched
first) is called with no arguments, or with ``checkpoint=PATH`` when ``--checkpoint`` is given,
and returns a wrapped generator (``hatrefine.adapters.wrap``). A run records the spec, so it
reloads anywhere that code is importable.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

from hatrefine.errors import HatrefineError
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, register_scheme


def _generator(name: str, checkpoint: Optional[str]) -> Generator:
    module_name, sep, attr = name.partition(":")
    if not (sep and module_name and attr):
        raise HatrefineError(f"py:{name} is not py:MODULE:FACTORY (e.g. py:my_models:make_decoder)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise HatrefineError(f"py:{name}: cannot import {module_name!r} ({e}); run from the folder that holds it or add it to PYTHONPATH") from None
    except Exception as e:  # the user's module itself failed while importing
        raise HatrefineError(
            f"py:{name}: importing module {module_name!r} raised {type(e).__name__}: {e}; fix that module (rerun with --debug for its traceback)"
        ) from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise HatrefineError(f"py:{name}: {module_name} has no function {attr!r}")
    generator = factory(checkpoint=checkpoint) if checkpoint else factory()
    if not isinstance(generator, Generator):
        raise HatrefineError(
            f"py:{name} returned {type(generator).__name__}; the factory must return a wrapped generator: "
            "hatrefine.adapters.wrap(module, latent_shape=..., image_shape=...)"
        )
    generator.name = f"py:{name}"
    return generator


register_scheme("py", Scheme(_generator, help="MODULE:FACTORY"))
