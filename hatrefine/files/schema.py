"""Checks of the JSON files hatrefine reads back from a run (config, checkpoint metadata,
sampling and quality records): a file written by hand or by another version fails with one
line naming the file, the field and the fix, never with a TypeError deep inside a command.

Every file hatrefine writes carries ``format_version`` (``FORMAT_VERSION``); a file without one
was written before versions were recorded and reads as version 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

from hatrefine.errors import HatrefineError

FORMAT_VERSION = 1
NUMBER = (int, float)
_KINDS = {"int": int, "float": NUMBER, "str": str, "bool": bool, "list": list, "dict": dict}


def check_version(d: dict, source: str, current: int = FORMAT_VERSION) -> int:
    """The file's format version; a newer one than this hatrefine reads is a one-line error."""
    if not isinstance(d, dict):
        raise HatrefineError(f"{source} holds a {type(d).__name__}, not a JSON object; restore the file hatrefine wrote")
    version = d.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise HatrefineError(f"{source}: format_version {version!r} is not a version number; restore the file hatrefine wrote")
    if version > current:
        raise HatrefineError(
            f"{source}: format_version {version} is newer than this hatrefine reads (up to {current}); upgrade hatrefine (pip install -U hatrefine)"
        )
    return version


def _kind_name(kind) -> str:
    if kind == NUMBER:
        return "number"
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def check_fields(
    d: dict, kinds: dict[str, Any], source: str, optional: Iterable[str] = (), nullable: Iterable[str] = (), defaults: Optional[dict] = None
) -> None:
    """``d`` has every field of ``kinds`` (name -> type or tuple of types) but ``optional`` ones, no
    others (``format_version`` aside), each of its type (``nullable`` ones may be null).
    ``defaults`` are quoted in the fix for a missing field."""
    optional, nullable = set(optional), set(nullable)
    unknown = sorted(set(d) - set(kinds) - {"format_version"})
    if unknown:
        raise HatrefineError(f"{source}: unknown field {unknown[0]!r}; remove it (it was written by another version or by hand)")
    for name, kind in kinds.items():
        if name not in d:
            if name in optional:
                continue
            hint = f" (default {defaults[name]!r})" if defaults and name in defaults else ""
            raise HatrefineError(f"{source}: field {name!r} is missing; add it{hint} or restore the file hatrefine wrote")
        value = d[name]
        if value is None and name in nullable:
            continue
        bad_bool = isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind)
        if bad_bool or not isinstance(value, kind):
            raise HatrefineError(f"{source}: field {name!r} is {value!r}; expected a {_kind_name(kind)}" + (" or null" if name in nullable else ""))


def dataclass_fields(cls) -> tuple[dict[str, Any], set[str], dict]:
    """(name -> type, the nullable names, the defaults) of a settings dataclass, from its annotations."""
    kinds, nullable, defaults = {}, set(), {}
    for f in dataclasses.fields(cls):
        t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if t.startswith("Optional["):
            t = t[len("Optional[") : -1]
            nullable.add(f.name)
        kinds[f.name] = _KINDS[t]
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return kinds, nullable, defaults


def settings_from_dict(cls, d: dict, source: str, legacy: Optional[dict] = None):
    """A settings dataclass from a saved dict, validated; a field the file predates takes its
    ``legacy`` value (what such runs did). The dataclass's own checks name the file too."""
    kinds, nullable, defaults = dataclass_fields(cls)
    d = {k: v for k, v in (legacy or {}).items() if k in kinds} | d
    check_fields(d, kinds, source, nullable=nullable, defaults=defaults)
    try:
        return cls(**d)
    except HatrefineError as e:
        raise HatrefineError(f"{source}: {e}") from None


def versions() -> dict:
    """The versions of the software that writes a run's files (recorded in its config.json)."""
    import platform
    from importlib.metadata import version

    import torch
    import torchvision

    return {"hatrefine": version("hatrefine"), "torch": torch.__version__, "torchvision": torchvision.__version__, "python": platform.python_version()}
