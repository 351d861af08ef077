"""Tandem synthesis (paper sec. 3.4): learn the generator and the hat network together, from scratch.

A conditional Hat EBM whose generator G starts untrained. Each step:

1. draw Z ~ N(0, I), run K Langevin steps on Y from 0 (G fixed), X = G(Z) + Y;
2. update H by eq. 8 (data down, X up), as the ``Trainer`` does;
3. take a random batch of (Z', X') pairs from a persistent bank, regress G(Z') onto X'
   (``generator_loss_weight`` x MSE), and overwrite those bank slots with this step's (Z, X).

G never sees data; it absorbs what past hat networks added to past generators. Its batch
norm runs in fixed mode (mean 0 / variance 1 with learnable affine): the adapter keeps
every generator in inference mode and the running statistics keep their initial 0 and 1.
The bank starts filled with (Z, G(Z)) of the initial generator.

The run directory is a ``fit`` run directory plus ``generator/`` (``dir:RUN_DIR`` loads it
as a generator); ``checkpoint/`` also holds G, its optimizer and the bank.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from hatrefine.files.names import GENERATOR_DIR
from hatrefine.networks.generator import Generator
from hatrefine.networks.registry import create_architecture
from hatrefine.settings.config import SynthesisConfig
from hatrefine.training.loop import Divergence, LearnsGenerator
from hatrefine.training.trainer import LOG_FIELDS, Trainer


class SynthesisTrainer(LearnsGenerator, Trainer):
    """Learns G and H in tandem into ``out``; ``resume=True`` continues exactly (bank included)."""

    config_class = SynthesisConfig
    meta_fields = Trainer.meta_fields | {"g_param_groups": list}
    log_fields = LOG_FIELDS + ["generator_loss"]

    def __init__(self, config: Optional[SynthesisConfig], out: str | Path, resume: bool = False, overwrite: bool = False, steps: Optional[int] = None):
        super().__init__(config, out, resume=resume, overwrite=overwrite, steps=steps)
        c = self.config
        net = self.generator.module.requires_grad_(True)  # DDP registers the parameters that need gradients
        self.g_ddp = self._ddp(net)
        net.requires_grad_(False)
        if not self.resumed:  # the bank starts as the initial generator's own pairs
            self.bank_z = self.generator.sample_latent(c.bank_size, generator=self.rng)
            with torch.no_grad():
                self.bank_x = torch.cat([self.generator(z) for z in self.bank_z.split(256)])

    def make_generator(self) -> Generator:
        """A new, untrained generator and its optimizer; on --resume both load from the checkpoint."""
        c = self.config
        arch, kwargs, nz = c.architecture()
        module = create_architecture(arch, **kwargs)
        self.g_opt = torch.optim.Adam(module.parameters(), lr=c.generator_lr, betas=(0.9, 0.999))
        return Generator(module, (nz,), c.shape(), value_range=c.value_range(), name=c.generator)

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        row = super().train_step()
        row["generator_loss"] = self.generator_step(self.last_samples.z, self.last_samples.x)[1]
        row["seconds_per_step"] = time.perf_counter() - t0
        return row

    def generator_step(self, z_new: torch.Tensor, x_new: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Regress G onto a random batch of the bank, then put this step's pairs (all ranks') in those slots.

        Returns the slots and the loss before the update."""
        c = self.config
        z_all, x_all = self.shard.gather(z_new.detach()), self.shard.gather(x_new.detach())
        idx = torch.randperm(c.bank_size, generator=self.rng, device=self.rng.device)[: len(z_all)].to(self.bank_z.device)
        mine = idx[self.shard.slice(len(idx))]
        net: nn.Module = self.generator.module
        net.requires_grad_(True)
        try:
            loss = c.generator_loss_weight * F.mse_loss(self.g_ddp(self.bank_z[mine]), self.bank_x[mine])
            self.g_opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.shard.any(not torch.isfinite(loss), self.device):
                raise Divergence(f"non-finite generator loss ({loss.item()})")
            for group in self.g_opt.param_groups:  # the schedule of H's learning rate, at this update (step was advanced by H's)
                group["lr"] = c.generator_lr * c.lr_factor(self.step - 1)
            self.g_opt.step()
        finally:
            net.requires_grad_(False)
        self.bank_z[idx], self.bank_x[idx] = z_all, x_all
        return idx, self.shard.mean(loss.detach()).item()

    # -- persistence ----------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return super().state_tensors() | {"bank_z": self.bank_z, "bank_x": self.bank_x}

    def save_checkpoint(self) -> None:
        """The Trainer's checkpoint (with G, its optimizer and the bank), then ``generator/``."""
        from hatrefine.adapters.hub import save_generator_dir

        super().save_checkpoint()
        if not self.shard.main:
            return
        arch, kwargs, nz = self.config.architecture()
        save_generator_dir(self.out / GENERATOR_DIR, self.generator.module, arch, kwargs, (nz,), self.config.shape(), value_range=self.config.value_range())

    def _load_state(self, t: dict[str, torch.Tensor], meta: dict) -> None:
        super()._load_state(t, meta)
        self.bank_z, self.bank_x = t["bank_z"].to(self.device), t["bank_x"].to(self.device)
