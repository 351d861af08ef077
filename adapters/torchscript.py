"""``torchscript:PATH``: a generator saved with ``torch.jit.save``.

A TorchScript file does not say its latent shape, so it travels with a small JSON
description, either inside the archive as the extra file ``hatrefine.json`` or beside it
as ``PATH.json``: ``{"latent_shape": [128], "image_shape": [3, 32, 32], "prior": "normal",
"value_range": [-1, 1]}`` (``image_shape`` is found by a test forward pass if left out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from hatrefine.errors import HatrefineError
from hatrefine.files.names import TORCHSCRIPT_META
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import Scheme, register_scheme


def save_torchscript(module: torch.nn.Module, path: str | Path, latent_shape, image_shape, prior="normal", value_range=(-1.0, 1.0)) -> None:
    """Script (or trace) ``module`` and save it with its description embedded."""
    try:
        scripted = torch.jit.script(module)
    except Exception:
        scripted = torch.jit.trace(module.eval(), torch.zeros(2, *latent_shape))
    meta = {
        "latent_shape": list(latent_shape),
        "image_shape": list(image_shape),
        "prior": prior,
        "value_range": None if value_range is None else list(value_range),
    }
    torch.jit.save(scripted, str(path), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})


def _load(path_str: str, checkpoint: Optional[str]) -> Generator:
    path = Path(path_str)
    if not path.is_file():
        raise HatrefineError(f"TorchScript file {path} does not exist; pass torchscript:PATH to a file saved with torch.jit.save")
    extra = {TORCHSCRIPT_META: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as e:
        raise HatrefineError(f"{path} is not a TorchScript file ({str(e).splitlines()[0][:100]}); save it with torch.jit.save") from None
    sidecar = path.with_name(path.name + ".json")
    if extra[TORCHSCRIPT_META]:
        meta = json.loads(extra[TORCHSCRIPT_META])
    elif sidecar.is_file():
        meta = json.loads(sidecar.read_text())
    else:
        raise HatrefineError(
            f'{path} does not say its latent shape; write {sidecar} with {{"latent_shape": [...]}} or save with hatrefine.adapters.torchscript.save_torchscript'
        )
    if "latent_shape" not in meta:
        raise HatrefineError(f"the description of {path} lacks 'latent_shape'; add it, e.g. [128]")
    image_shape = meta.get("image_shape")
    if image_shape is None:
        with torch.no_grad():
            image_shape = list(module.eval()(torch.zeros(1, *meta["latent_shape"])).shape[1:])
    return Generator(
        module,
        meta["latent_shape"],
        image_shape,
        prior=meta.get("prior", "normal"),
        value_range=None if meta.get("value_range", 0) is None else tuple(meta.get("value_range", (-1.0, 1.0))),
        name=f"torchscript:{path}",
    )


register_scheme("torchscript", Scheme(_load, help="PATH"))
