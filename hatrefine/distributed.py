"""Running under ``torchrun --nproc_per_node N``: PyTorch DistributedDataParallel, nccl on GPUs, gloo on CPU.

How the work is split, so that a run gives the same result on any number of processes:

- training: every rank draws the global batch's data order, latents and Langevin noise from
  the run's seed and keeps its own slice (``Shard``); H's gradients are averaged by DDP, so
  an update equals the single-process update on the global batch. Rank 0 logs and writes.
- sampling: chunk ``i`` of the chains is seeded by (seed, i); rank r runs chunks r, r + N, ...
  and writes its shard, which rank 0 merges in chunk order.
- FID: each rank extracts the features of its share of the samples; rank 0 computes the distance.

Outside torchrun everything here is a no-op (one process, rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hatrefine.errors import HatrefineError


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def slice(self, n: int) -> slice:
        """This rank's part of ``n`` items (``n`` divisible by ``world``)."""
        if n % self.world:
            raise HatrefineError(f"batch of {n} does not split over {self.world} processes; use a batch size divisible by {self.world}")
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    # -- collectives (no-ops for one process) --------------------------------------------
    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over ranks."""
        if self.world == 1:
            return x
        x = x.detach().clone()
        dist.all_reduce(x)
        return x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over ranks."""
        return self.sum(x) / self.world

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on one."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's ``x`` (equal shapes), concatenated in rank order, on every rank."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)


def setup(device: str = "auto") -> tuple[Shard, str]:
    """Join the torchrun process group if launched by torchrun; returns (shard, device name).

    Under torchrun with GPUs each rank takes ``cuda:LOCAL_RANK``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device == "auto":
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Shard(rank, world), device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HatrefineError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HatrefineError(f"device {name} asked for but no CUDA GPU is visible; use --device cpu")
    return device
