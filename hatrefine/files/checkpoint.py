"""Weights files: reading them safely, loading them strictly, writing them atomically.

Reading never executes code from a file: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.files.jsonfiles import atomic_write, read_json, save_json
from hatrefine.files.names import CHECKPOINT_DIR, CONFIG, LOCK
from hatrefine.files.schema import FORMAT_VERSION, check_fields, check_version


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


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors, atomically (contiguous CPU copies)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp))


# -- run directories and resumable training state ------------------------------------------


_held: dict[Path, int] = {}  # run directory -> descriptor of its lock file, kept open while the process lives


def lock_run_dir(out: Path) -> None:
    """Make this process the one writer of ``out``: an advisory lock on ``out/.lock``, held until
    the process ends (the operating system drops it when the process dies, SIGKILL included).
    A second writer gets a one-line error naming the directory and the process that holds it."""
    out = Path(out).resolve()
    if out in _held:
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise
        try:
            holder = json.loads(path.read_text())
            who = f"process {holder['pid']} on {holder['host']} ({holder['command']}, since {holder['since']})"
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise HatrefineError(f"{out} is in use by {who}; wait for it to finish, stop it, or pass another --out") from None
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    _held[out] = fd


def run_files(out: Path) -> list[Path]:
    """What ``out`` holds, its lock file aside."""
    return [p for p in out.iterdir() if p.name != LOCK] if out.is_dir() else []


def check_run_dir(out: Path, resume: bool, overwrite: bool, marker: str = CONFIG) -> None:
    """Refuse to start over a run that exists (unless ``overwrite``) or to resume nothing.

    Nothing is deleted here: ``start_run_dir`` does that once every setting has been checked."""
    if resume:
        if not (out / marker).is_file():
            raise HatrefineError(f"nothing to resume in {out} (no {marker}); run without --resume to start it")
    elif run_files(out) and not overwrite:
        if (stop := stopped_at(out, marker)) is not None:
            raise HatrefineError(
                f"{out} holds an unfinished run (stopped at step {stop[0]} of {stop[1]}); pass --resume to continue it, --overwrite to replace it, or another --out"
            )
        raise HatrefineError(f"{out} already holds files; pass --resume to continue that run, --overwrite to replace it, or another --out")


@contextmanager
def opening_run_dir(out: Path, resume: bool, overwrite: bool, marker: str = CONFIG, lock: bool = True):
    """Take the run directory's lock (``lock_run_dir``; under torchrun rank 0 alone passes
    ``lock``) and ``check_run_dir``, around a trainer's set-up: if that fails, a directory that
    was made only to hold the lock is removed again, so a run that never started leaves nothing."""
    existed = out.exists()
    if lock:
        lock_run_dir(out)
    try:
        check_run_dir(out, resume, overwrite, marker)
        yield
    except BaseException:
        if lock and not existed and not run_files(out):
            os.close(_held.pop(out.resolve()))
            shutil.rmtree(out, ignore_errors=True)
        raise


def discard_unstarted_run(out: Path) -> None:
    """Remove a run that failed before its first update (it holds only its settings and a step-0
    checkpoint), so the next attempt needs neither --resume nor --overwrite: its files, its lock,
    and the folder itself once empty."""
    for p in run_files(out):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    fd = _held.pop(out.resolve(), None)
    if fd is not None:
        os.close(fd)
        (out / LOCK).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        out.rmdir()


def start_run_dir(out: Path) -> None:
    """An empty ``out`` for a new run (what ``check_run_dir`` allowed to replace is removed now; the lock stays)."""
    out.mkdir(parents=True, exist_ok=True)
    for p in run_files(out):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


DISK_CAUSES = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.EROFS: "read-only file system"}  # fmt: skip


def _errno(e: BaseException) -> int | None:
    if isinstance(e, OSError):
        return e.errno
    m = re.search(r"os error (\d+)", str(e))  # safetensors reports I/O errors in its own exception type
    return int(m.group(1)) if m else None


def last_good_checkpoint(out: Path) -> int | None:
    """The step of the checkpoint in ``out`` if it reads back whole (metadata and every tensor); else None."""
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        try:
            step = json.loads((out / name / "state.json").read_text())["step"]
            read_state_dict(out / name / "state.safetensors")
            return step
        except (HatrefineError, OSError, ValueError, KeyError):
            continue
    return None


@contextmanager
def disk_errors(out: Path):
    """Out of space, or no permission, while writing a run: one line naming the directory and the
    cause, and what ``--resume`` will continue from (the checkpoint is replaced atomically, so a
    failed save leaves the previous one; this checks that it reads back)."""
    try:
        yield
    except (OSError, SafetensorError) as e:
        cause = DISK_CAUSES.get(_errno(e))
        if cause is None:
            raise
        filename = getattr(e, "filename", None)
        where = out if filename is None or out.resolve() in Path(filename).resolve().parents else Path(filename).parent
        shutil.rmtree(out / (CHECKPOINT_DIR + ".tmp"), ignore_errors=True)  # the half-written new checkpoint
        step = last_good_checkpoint(out)
        kept = (
            f"the last checkpoint (step {step}) is intact; fix that and pass --resume to continue from it"
            if step is not None
            else "no checkpoint was saved yet; fix that and start again with --overwrite"
        )
        raise HatrefineError(f"cannot write to {where}: {cause}; {kept}") from None


def stopped_at(out: Path, marker: str = CONFIG) -> Optional[tuple[int, int]]:
    """(last saved step, steps asked for) of a run that stopped before its end; None otherwise."""
    try:
        settings = json.loads((out / marker).read_text())
    except (OSError, ValueError):
        return None
    total = (settings.get("hatrefine") or settings.get("autoencoder") or settings.get("latent_prior") or {}).get("steps")
    step = 0
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
        try:
            step = json.loads((out / name / "state.json").read_text())["step"]
            break
        except (OSError, ValueError, KeyError):
            continue
    return (step, total) if isinstance(total, int) and step < total else None


def has_checkpoint(out: Path) -> bool:
    return any((out / d / "state.json").is_file() for d in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"))


def save_checkpoint(out: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``checkpoint.tmp/`` then swap it in for ``checkpoint/``: a crash at any moment
    leaves the old checkpoint or the new one, never half of one."""
    tmp, final, old = out / (CHECKPOINT_DIR + ".tmp"), out / CHECKPOINT_DIR, out / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_tensors(tmp / "state.safetensors", tensors)
    save_json(tmp / "state.json", {"format_version": FORMAT_VERSION, **meta})
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)  # left half-removed by a crash after the last swap
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


META_FIELDS = {"step": int, "param_groups": list, "log_rows": int}  # what every trainer's state.json holds


def load_checkpoint(out: Path, meta_fields: dict | None = None, optional: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of the last complete checkpoint in ``out``; the metadata is checked
    against ``meta_fields`` (name -> type; default ``META_FIELDS``), of which older runs may lack ``optional``."""
    ckpt = out / CHECKPOINT_DIR
    if not ckpt.is_dir() and (out / (CHECKPOINT_DIR + ".old")).is_dir():
        os.replace(out / (CHECKPOINT_DIR + ".old"), ckpt)  # crashed between the two renames
    source = str(ckpt / "state.json")
    meta = read_json(ckpt / "state.json")
    check_version(meta, source)
    check_fields(meta, meta_fields or META_FIELDS, source, optional=optional)
    return read_state_dict(ckpt / "state.safetensors"), meta


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], list]:
    """An optimizer's state as flat tensors (``PREFIX.I.NAME``) plus its param groups (JSON)."""
    state = opt.state_dict()
    tensors = {}
    for i, s in state["state"].items():
        tensors |= {f"{prefix}.{i}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)) for k, v in s.items()}
    return tensors, state["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, param_groups: list) -> None:
    """Inverse of ``optimizer_tensors``."""
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def subdict(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries ``PREFIX.KEY`` of a flat state, as ``KEY``."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


class RunLog:
    """``log.csv`` of a run: rows appended as training goes, cut back to the checkpoint on resume."""

    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields

    def append(self, rows: list[dict]) -> None:
        """Append rows; a file written by an older version keeps its own columns (new ones are left out)."""
        new = not self.path.exists()
        fields = self.fields
        if not new:
            with open(self.path, newline="") as f:
                fields = next(csv.reader(f), None) or self.fields
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)

    def n_rows(self) -> int:
        return max(0, len(self.path.read_text().splitlines()) - 1) if self.path.exists() else 0

    def truncate(self, n_rows: int) -> None:
        """Drop rows written after the checkpoint (they will be written again)."""
        if self.path.exists():
            self.path.write_text("".join(self.path.read_text().splitlines(keepends=True)[: n_rows + 1]))
