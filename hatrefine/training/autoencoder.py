"""Retrofit, step one: a deterministic autoencoder whose decoder a Hat EBM can sample from.

The latent is image-shaped (1 x 16 x 16 for 32 x 32 images, as in the paper). The encoder's
output is projected onto the sphere of radius sqrt(m), m the latent size; the decoder is
trained on that point plus small Gaussian noise, with an MSE loss. Afterwards the encoder is
not needed: ``hatrefine fit --generator ae:AE_DIR --mode joint`` starts chains from
Z ~ N(0, I) (whose norm is close to sqrt(m)) even though the autoencoder never had a prior.

An autoencoder directory::

    config.json           {"generator": the decoder (prior null), "encoder": ..., "autoencoder": settings, "versions"}
    model.safetensors     decoder weights (what ``ae:AE_DIR`` loads)
    encoder.safetensors   encoder weights
    checkpoint/           encoder, decoder, optimizer and RNG state for --resume (swapped in atomically)
    log.csv               step, loss, seconds_per_step
    reconstructions.png   data (odd rows) over their reconstructions (even rows)
    prior_samples.png     decoder(N(0, I)): what sampling looks like before a retrofit
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from hatrefine.data import DataStream, open_dataset
from hatrefine.errors import HatrefineError
from hatrefine.evaluation import report
from hatrefine.files.checkpoint import (
    RunLog,
    disk_errors,
    has_checkpoint,
    load_checkpoint,
    load_optimizer,
    load_strict,
    opening_run_dir,
    optimizer_tensors,
    save_checkpoint,
    save_tensors,
    start_run_dir,
    subdict,
)
from hatrefine.files.jsonfiles import read_json, save_json
from hatrefine.files.names import CONFIG, ENCODER_WEIGHTS, MODEL_WEIGHTS
from hatrefine.files.schema import FORMAT_VERSION, check_version, settings_from_dict
from hatrefine.networks.autoencoder import Encoder
from hatrefine.networks.registry import create_architecture
from hatrefine.settings.autoencoder import AEConfig
from hatrefine.training.events import EventLog, require_tensorboard
from hatrefine.training.loop import TrainingLoop
from hatrefine.training.resolve import Resolved, resolve_config


class AutoencoderTrainer(TrainingLoop):
    """Pretrains an autoencoder into ``out``; ``resume=True`` continues it exactly (``run()``: ``hatrefine.training.loop``)."""

    name = "pretrain-ae"

    def __init__(self, config: Optional[AEConfig], out: str | Path, resume: bool = False, overwrite: bool = False, steps: Optional[int] = None):
        self.out = Path(out)
        with opening_run_dir(self.out, resume, overwrite, CONFIG):
            self._open(config, resume, steps)

    def _open(self, config: AEConfig | Resolved | None, resume: bool, steps: Optional[int]) -> None:
        from hatrefine.distributed import resolve_device
        from hatrefine.files.schema import versions

        if resume:
            source = self.out / CONFIG
            saved = read_json(source)
            check_version(saved, str(source))
            if not isinstance(saved.get("autoencoder"), dict):
                raise HatrefineError(f"{self.out} is not an autoencoder directory (no 'autoencoder' in {CONFIG}); pass the --out of pretrain-ae")
            config = settings_from_dict(
                AEConfig,
                {**saved["autoencoder"], **({"steps": steps} if steps is not None else {})},
                str(source),
                legacy={"tensorboard": False, "gen_factor": 1.0, "recipe": None, "decoder": "conv", "batch_norm": "batch"},
            )
        elif config is None:
            raise HatrefineError("a new autoencoder needs its settings (an AEConfig)")
        else:
            config = (config if isinstance(config, Resolved) else resolve_config(config)).config
        if config.tensorboard:
            require_tensorboard()  # before anything is written
        self.config = c = config
        self.device = resolve_device(c.device)
        torch.manual_seed(c.seed)
        self.data = DataStream(open_dataset(c.data, c.image_shape, split="train", root=c.data_root), c.batch_size, c.seed)
        self.encoder = Encoder(**c.kwargs()).to(self.device)
        self.decoder = create_architecture(c.decoder_architecture(), **c.decoder_kwargs()).to(self.device)
        self._train_mode()
        self.opt = torch.optim.Adam([*self.encoder.parameters(), *self.decoder.parameters()], lr=c.lr)
        self.rng = torch.Generator(self.device).manual_seed(c.seed)
        self.log = RunLog(self.out / "log.csv", ["step", "loss", "seconds_per_step"])
        self.step = 0
        if resume and has_checkpoint(self.out):
            self._load_state(*load_checkpoint(self.out))
        elif not resume:
            with disk_errors(self.out):
                start_run_dir(self.out)
                save_json(self.out / CONFIG, self._directory_config(versions()))
        self.events = EventLog(self.out, self.step + 1 if resume else None) if c.tensorboard else None

    def _directory_config(self, versions: dict) -> dict:
        c = self.config
        entry = lambda arch: {"architecture": arch, "kwargs": c.kwargs()}  # noqa: E731
        decoder = {"architecture": c.decoder_architecture(), "kwargs": c.decoder_kwargs()} | {
            "latent_shape": c.latent_shape,
            "image_shape": c.image_shape,
            "prior": None,
            "value_range": c.value_range(),
        }
        return {
            "format_version": FORMAT_VERSION,
            "generator": decoder,
            "encoder": entry("ae_encoder"),
            "autoencoder": dataclasses.asdict(c),
            "versions": versions,
        }

    def reconstruct(self, x: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
        z = self.encoder(x)
        if noise:
            z = z + noise * torch.randn(z.shape, generator=self.rng, device=z.device)
        return self.decoder(z)

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        x = self.data.batch(self.step).to(self.device)
        loss = F.mse_loss(self.reconstruct(x, self.config.latent_noise), x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        return {"step": self.step, "loss": loss.item(), "seconds_per_step": time.perf_counter() - t0}

    def postfix(self, row: dict) -> dict:
        return {"mse": f"{row['loss']:.4f}"}

    def finish(self, progress: bool) -> None:
        self.save_figures()

    @torch.no_grad()
    def save_figures(self, n: int = 32) -> None:
        self.decoder.eval()  # (the ResNet decoder's batch norm: its running statistics, as a Hat EBM will use them)
        try:
            self._save_figures(n)
        finally:
            self._train_mode()

    def _train_mode(self) -> None:
        """The decoder in training mode, its batch norm in inference mode for ``batch_norm="fixed"``
        (the authors' ``training=False``: the statistics stay at 0 and 1, gamma and beta learn)."""
        self.decoder.train()
        if self.config.batch_norm == "fixed":
            for m in self.decoder.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _save_figures(self, n: int) -> None:
        x = self.data.batch(0)[:n].to(self.device)
        recon = self.reconstruct(x)
        pairs = torch.stack([x.view(-1, 8, *x.shape[1:]), recon.view(-1, 8, *x.shape[1:])], 1).flatten(0, 2)
        report.save_grid(pairs, self.out / "reconstructions.png")
        if self.events:
            self.events.image("reconstructions", report.grid(pairs), self.step)
        z = torch.randn((64, *self.config.latent_shape), generator=torch.Generator().manual_seed(0)).to(self.device)
        report.save_grid(self.decoder(z), self.out / "prior_samples.png")

    # -- persistence ----------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        opt, groups = optimizer_tensors(self.opt, "opt")
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        tensors |= {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()} | opt
        tensors |= {"rng": self.rng.get_state(), "torch_rng": torch.get_rng_state()}
        save_checkpoint(self.out, tensors, {"step": self.step, "param_groups": groups, "log_rows": self.log.n_rows()})
        save_tensors(self.out / ENCODER_WEIGHTS, self.encoder.state_dict())
        save_tensors(self.out / MODEL_WEIGHTS, self.decoder.state_dict())

    def _load_state(self, t: dict[str, torch.Tensor], meta: dict) -> None:
        load_strict(self.encoder, subdict(t, "encoder"), str(self.out))
        load_strict(self.decoder, subdict(t, "decoder"), str(self.out))
        load_optimizer(self.opt, t, "opt", meta["param_groups"])
        self.rng.set_state(t["rng"])
        torch.set_rng_state(t["torch_rng"])
        self.step = meta["step"]
        self.log.truncate(meta["log_rows"])
