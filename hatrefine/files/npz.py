"""The interchange format every command shares: ``.npz`` with float32 NCHW images in [-1, 1].

Keys: ``x`` (images), ``z`` (latents, (N, *latent_shape)), and from ``sample`` / ``refine``
also ``y`` (residuals) and ``g`` (= G(z)). ``NpzWriter`` streams chunks to disk so any N
fits in bounded memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from hatrefine.errors import HatrefineError


class NpzWriter:
    """Fill arrays chunk by chunk through memory maps, then zip them into ``path`` atomically."""

    def __init__(self, path: str | Path, n: int, shapes: dict[str, Sequence[int]]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmpdir = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}."))
        self.arrays = {k: np.lib.format.open_memmap(self.tmpdir / f"{k}.npy", mode="w+", dtype=np.float32, shape=(n, *shape)) for k, shape in shapes.items()}
        self.n, self.filled = n, 0

    def write(self, **chunks: torch.Tensor) -> None:
        m = len(next(iter(chunks.values())))
        for k, v in chunks.items():
            self.arrays[k][self.filled : self.filled + m] = v.detach().float().cpu().numpy()
        self.filled += m

    def close(self) -> None:
        try:
            if self.filled != self.n:
                raise RuntimeError(f"NpzWriter got {self.filled} of {self.n} rows")
            for a in self.arrays.values():
                a.flush()
            self.arrays.clear()
            tmp_zip = self.tmpdir / "out.npz"
            with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for f in sorted(self.tmpdir.glob("*.npy")):
                    zf.write(f, arcname=f.name)
            os.chmod(tmp_zip, 0o644)
            os.replace(tmp_zip, self.path)
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def read_npz(path: str | Path, required: Sequence[str] = (), optional: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """Tensors for the keys asked for; a missing file or key gets a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise HatrefineError(f"{path} does not exist; pass an .npz written by hatrefine (or with the same keys)")
    try:
        with np.load(path) as f:
            missing = [k for k in required if k not in f.files]
            if missing:
                raise HatrefineError(f"{path} has keys {f.files} but lacks {missing}; write images under 'x' and latents under 'z'")
            return {k: torch.from_numpy(np.asarray(f[k], dtype=np.float32)) for k in (*required, *optional) if k in f.files}
    except HatrefineError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise HatrefineError(f"{path} is not a readable .npz file ({str(e)[:100]}); write it with numpy.savez") from None


def merge_chunk_shards(path: str | Path, parts: list[Path], n: int, batch_size: int) -> None:
    """Join the shards that ranks wrote (chunk ``i`` of ``batch_size`` rows is in part ``i % len(parts)``)
    into one ``.npz`` in chunk order, then delete the shards."""
    loaded = [dict(np.load(p)) for p in parts]
    shapes = {k: v.shape[1:] for k, v in loaded[0].items()}
    offsets = [0] * len(parts)
    with NpzWriter(path, n, shapes) as w:
        for i, start in enumerate(range(0, n, batch_size)):
            r, m = i % len(parts), min(batch_size, n - start)
            w.write(**{k: torch.from_numpy(v[offsets[r] : offsets[r] + m]) for k, v in loaded[r].items()})
            offsets[r] += m
    for p in parts:
        p.unlink()


def save_npz(path: str | Path, **arrays: Optional[torch.Tensor]) -> None:
    """Write whole tensors (as float32) to ``path`` atomically."""
    present = {k: v for k, v in arrays.items() if v is not None}
    with NpzWriter(path, len(next(iter(present.values()))), {k: v.shape[1:] for k, v in present.items()}) as w:
        w.write(**present)
