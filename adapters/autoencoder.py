"""``ae:AE_DIR``: the decoder of an autoencoder pretrained by ``hatrefine pretrain-ae``.

It has no latent prior, so only joint mode applies (the retrofit); chains still start from
Z ~ N(0, I).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from hatrefine.errors import HatrefineError
from hatrefine.files.jsonfiles import read_json
from hatrefine.files.names import CONFIG, MODEL_WEIGHTS
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, register_scheme

from .hub import load_generator_dir


def _autoencoder(path: str, checkpoint: Optional[str]) -> Generator:
    directory = Path(path)
    if not (directory / CONFIG).is_file() or "autoencoder" not in read_json(directory / CONFIG):
        raise HatrefineError(f"{path} is not an autoencoder directory; create it with `hatrefine pretrain-ae --out {path}`")
    if not (directory / MODEL_WEIGHTS).is_file():
        raise HatrefineError(f"{path} has no decoder weights yet; let `hatrefine pretrain-ae --resume --out {path}` reach its first checkpoint")
    return load_generator_dir(directory, name=f"ae:{path}")


register_scheme("ae", Scheme(_autoencoder, help="AE_DIR (from pretrain-ae; joint mode only)"))
