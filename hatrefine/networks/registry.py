"""One registry: spec strings -> generators (and discriminators), names -> architectures.

A spec is ``SCHEME:NAME`` (``mimicry:sngan_cifar10``, ``builtin:mnist``, ``hf:ORG/NAME``,
``torchscript:PATH``, ``ae:DIR``, ``dir:PATH``), for some schemes with options in brackets
(``biggan:deep-128[class=207,truncation=0.4]``). Adapters in ``hatrefine.adapters`` register the schemes;
architectures (classes that a ``config.json`` can name) register by name, as in timm.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.networks.generator import Generator

Loader = Callable[[str, Optional[str]], nn.Module]


@dataclass
class Scheme:
    generator: Callable[[str, Optional[str]], Generator]
    discriminator: Optional[Loader] = None
    names: list[str] = field(default_factory=list)  # known names, for listings; empty = free-form
    help: str = ""
    options: str = ""  # the bracket options it takes, for listings: "[class=N,truncation=T]"
    extra: str = ""  # the pip extra it needs, for listings: "biggan" -> pip install 'hatrefine[biggan]'


_SCHEMES: dict[str, Scheme] = {}
_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
_OPTIONS = re.compile(r"^(.*)(\[[^\[\]]*\])$")


def register_scheme(prefix: str, scheme: Scheme) -> None:
    """Make ``prefix:NAME`` specs resolve through ``scheme``."""
    _SCHEMES[prefix] = scheme


def register_architecture(name: str) -> Callable:
    """Class decorator: lets config files build this module by ``name``."""

    def deco(cls: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHITECTURES[name] = cls
        return cls

    return deco


def create_architecture(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture, e.g. ``create_architecture("dcgan_generator", nz=64)``."""
    _populate()
    if name not in _ARCHITECTURES:
        raise HatrefineError(f"unknown architecture {name!r}; known: {', '.join(sorted(_ARCHITECTURES))}")
    try:
        return _ARCHITECTURES[name](**kwargs)
    except TypeError as e:
        raise HatrefineError(f"bad settings for architecture {name!r}: {e}") from None


# Modules whose networks a config.json can name; the adapters register the rest with their schemes.
ARCHITECTURE_MODULES = ("hatrefine.networks.autoencoder", "hatrefine.networks.hierarchical", "hatrefine.networks.latent_energy")


def _populate() -> None:
    """Register every scheme and architecture: the plugins are imported on first use, not at import."""
    import hatrefine.adapters  # noqa: F401  (registers schemes and generator architectures)

    for name in ARCHITECTURE_MODULES:
        importlib.import_module(name)


def known_specs() -> list[str]:
    """Every spec the registry knows by name, plus the free-form patterns."""
    _populate()
    out = []
    for prefix, scheme in sorted(_SCHEMES.items()):
        needs = f"  (pip install 'hatrefine[{scheme.extra}]')" if scheme.extra else ""
        out += [f"{prefix}:{n}{scheme.options}{needs}" for n in scheme.names or [scheme.help]]
    return out


def _strip_options(name: str) -> tuple[str, str]:
    """``deep-128[class=1]`` -> (``deep-128``, ``[class=1]``); a name without brackets keeps ``""``."""
    m = _OPTIONS.match(name)
    return (m[1], m[2]) if m else (name, "")


def spec_options(prefix: str, name: str, allowed: dict[str, type]) -> tuple[str, dict]:
    """``NAME[key=value,...]`` -> (NAME, {key: allowed[key](value)}): the options of a ``prefix:`` spec."""
    spec = f"{prefix}:{name}"
    base, suffix = _strip_options(name)
    options = {}
    for item in filter(None, (s.strip() for s in suffix[1:-1].split(","))):
        key, sep, value = (t.strip() for t in item.partition("="))
        if not sep or key not in allowed:
            raise HatrefineError(f"{spec}: bad option {item!r}; write {prefix}:{base}[KEY=VALUE,...] with KEY one of {', '.join(allowed)}")
        try:
            options[key] = allowed[key](value)
        except ValueError:
            kind = allowed[key].__name__
            raise HatrefineError(f"{spec}: option {key}={value} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}") from None
    return base, options


def is_known_spec(spec: str) -> bool:
    """Whether ``spec`` names a registered scheme (and a known name, where the scheme lists them)."""
    _populate()
    prefix, sep, name = spec.partition(":")
    return bool(sep) and prefix in _SCHEMES and (not _SCHEMES[prefix].names or _strip_options(name)[0] in _SCHEMES[prefix].names)


def _split(spec: str) -> tuple[Scheme, str]:
    _populate()
    prefix, sep, name = spec.partition(":")
    if not sep or prefix not in _SCHEMES:
        raise HatrefineError(f"unknown generator spec {spec!r}; known: {', '.join(known_specs())}")
    scheme = _SCHEMES[prefix]
    if scheme.names and _strip_options(name)[0] not in scheme.names:
        raise HatrefineError(f"unknown generator spec {spec!r}; known: {', '.join(known_specs())}")
    return scheme, name


def absolute_spec(spec: str) -> str:
    """``ae:runs/ae`` -> ``ae:/abs/runs/ae`` where the path exists, so a saved run finds it from anywhere
    (options kept: ``diffusers:vae[size=64]`` -> ``diffusers:/abs/vae[size=64]``)."""
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in ("ae", "dir", "hf", "torchscript", "diffusers"):
        for path, options in ((rest, ""), _strip_options(rest)):
            if path and Path(path).exists():
                return f"{prefix}:{Path(path).resolve()}{options}"
    return spec


def absolute_source(value: str) -> str:
    """A spec or weights file as a run records it: a file by its absolute path, a spec by ``absolute_spec``."""
    return str(Path(value).resolve()) if Path(value).is_file() else absolute_spec(value)


def load_generator(spec: str, checkpoint: Optional[str] = None) -> Generator:
    """Resolve a spec to a frozen ``Generator``; ``checkpoint`` is a local weights file."""
    scheme, name = _split(spec)
    return scheme.generator(name, checkpoint)


def load_discriminator(spec: str, checkpoint: Optional[str] = None) -> nn.Module:
    """Resolve a spec to its frozen discriminator (one logit per image), where one exists."""
    scheme, name = _split(spec)
    if scheme.discriminator is None:
        raise HatrefineError(f"{spec} has no discriminator; use a mimicry: or builtin: spec")
    d = scheme.discriminator(name, checkpoint)
    d.requires_grad_(False)
    return d.eval()


def resolve_discriminator(value: str, generator_spec: str) -> nn.Module:
    """A discriminator from a spec (``builtin:mnist``) or a weights file for ``generator_spec``'s architecture."""
    if is_known_spec(value):
        return load_discriminator(value)
    if Path(value).is_file():
        return load_discriminator(generator_spec, value)
    raise HatrefineError(f"--discriminator {value!r} is neither a known spec (`hatrefine list`) nor an existing weights file")
