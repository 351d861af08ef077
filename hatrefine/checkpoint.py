"""Weights files: reading them safely, loading them strictly, writing them atomically.

Reading never executes code from a file: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import HatrefineError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch checkpoint.

    A Mimicry-style checkpoint ``{'model_state_dict', 'optimizer_state_dict', 'global_step'}``
    is unwrapped to its model state dict; a bare state dict is returned as is.
    """
    path = Path(path)
    if not path.is_file():
        raise HatrefineError(f"checkpoint {path} does not exist; pass the path of a weights file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt files, or objects weights_only refuses to unpickle
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        if isinstance(e, (SafetensorError, RuntimeError, EOFError, OSError, ValueError)):
            raise HatrefineError(f"checkpoint {path} is truncated or not a weights file ({first}); download or save it again") from None
        raise HatrefineError(f"checkpoint {path} could not be read safely ({first}); it must hold only tensors") from None
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HatrefineError(f"checkpoint {path} holds no state dict; save model.state_dict() (or Mimicry's checkpoint dict)")
    return obj


def _brief(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load with strict key and shape matching; a mismatch names the keys briefly."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_brief(missing)}")
        if unexpected:
            parts.append(f"unexpected {_brief(unexpected)}")
        if wrong:
            parts.append(f"wrong shape {_brief(wrong, 2)}")
        raise HatrefineError(f"{source} is for another architecture: {'; '.join(parts)}; use the checkpoint that matches the spec")
    module.load_state_dict(state, strict=True)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors, atomically (contiguous CPU copies)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp))


def save_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HatrefineError(f"{path} does not exist; point at a directory saved by hatrefine") from None
    except json.JSONDecodeError as e:
        raise HatrefineError(f"{path} is not valid JSON ({e}); restore or re-create it") from None
