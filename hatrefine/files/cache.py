"""Where downloaded weights are cached, and whether downloads are allowed (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """hatrefine's cache: ``$HATREFINE_CACHE``, else ``$XDG_CACHE_HOME/hatrefine`` or ``~/.cache/hatrefine``."""
    return Path(os.environ.get("HATREFINE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hatrefine")


def offline() -> bool:
    """Downloads are off: ``HATREFINE_OFFLINE`` or ``HF_HUB_OFFLINE`` set to 1 / true / yes."""
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes") for k in ("HATREFINE_OFFLINE", "HF_HUB_OFFLINE"))
