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
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import report
from .checkpoint import (
    RunLog,
    disk_errors,
    has_checkpoint,
    load_checkpoint,
    load_optimizer,
    load_strict,
    opening_run_dir,
    optimizer_tensors,
    read_json,
    save_checkpoint,
    save_json,
    save_tensors,
    start_run_dir,
    subdict,
)
from .data import DataStream, open_dataset
from .errors import HatrefineError
from .events import EventLog, require_tensorboard
from .loop import TrainingLoop
from .registry import create_architecture, register_architecture
from .schema import FORMAT_VERSION, check_version, settings_from_dict

CONFIG, DECODER_WEIGHTS, ENCODER_WEIGHTS = "config.json", "model.safetensors", "encoder.safetensors"


def project_to_sphere(e: torch.Tensor) -> torch.Tensor:
    """Scale each sample to norm sqrt(m), m its number of elements."""
    m = e[0].numel()
    return F.normalize(e.flatten(1), dim=1).mul(math.sqrt(m)).view_as(e)


def _levels(size: int, latent_size: int) -> int:
    """Number of 2x resolution steps between the latent and the image."""
    k = max(0, (size // max(1, latent_size)).bit_length() - 1)
    if latent_size <= 0 or latent_size << k != size:
        raise HatrefineError(f"latent side {latent_size} does not divide image side {size} by a power of 2; use e.g. --latent-shape 1,{size // 2},{size // 2}")
    return k


@register_architecture("ae_encoder")
class Encoder(nn.Module):
    """(C, S, S) -> conv3 -> k stride-2 conv4 (width doubling) -> two conv3 -> latent (c, s, s) on the sphere."""

    def __init__(self, channels: int = 1, size: int = 32, latent_shape: tuple = (1, 16, 16), width: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        w = width
        for _ in range(_levels(size, latent_shape[1])):
            layers += [nn.Conv2d(w, 2 * w, 4, 2, 1), nn.LeakyReLU(0.2)]
            w *= 2
        layers += [nn.Conv2d(w, w, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, latent_shape[0], 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return project_to_sphere(self.net(x))


@register_architecture("ae_decoder")
class Decoder(nn.Module):
    """latent (c, s, s) -> two conv3 -> k x (2x nearest upsample, conv3; width halving) -> conv3 -> (C, S, S), ``out_factor`` * tanh."""

    def __init__(self, channels: int = 1, size: int = 32, latent_shape: tuple = (1, 16, 16), width: int = 64, out_factor: float = 1.0):
        super().__init__()
        self.out_factor = out_factor
        k = _levels(size, latent_shape[1])
        w = width << k
        layers: list[nn.Module] = [nn.Conv2d(latent_shape[0], w, 3, 1, 1), nn.ReLU(), nn.Conv2d(w, w, 3, 1, 1), nn.ReLU()]
        for _ in range(k):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w // 2, 3, 1, 1), nn.ReLU()]
            w //= 2
        layers += [nn.Conv2d(w, channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out_factor * self.net(z)


DECODERS = ("conv", "resnet")  # hatrefine's conv decoder; the authors' ResNet gen_decoder (C x 16 x 16 -> 32 x 32)


@dataclass
class AEConfig:
    """Settings of ``hatrefine pretrain-ae`` (saved under ``autoencoder`` in config.json)."""

    command: ClassVar[str] = "pretrain-ae"
    recipe: Optional[str] = None  # the recipe the settings came from (hatrefine.recipes)
    data: str = "builtin:mnist"
    data_root: Optional[str] = None
    image_shape: list = field(default_factory=lambda: [1, 32, 32])
    latent_shape: list = field(default_factory=lambda: [1, 16, 16])
    width: int = 32
    steps: int = 1500
    batch_size: int = 64
    lr: float = 5e-4
    latent_noise: float = 0.02
    seed: int = 0
    device: str = "auto"
    log_every: int = 50
    save_every: int = 500
    tensorboard: bool = False
    gen_factor: float = 2.0  # the decoder ends in gen_factor * tanh, as the authors' (1.0 before this setting existed)
    decoder: str = "conv"  # DECODERS; "resnet": the authors' gen_decoder, its width the conv decoder's top (width << levels)

    def __post_init__(self):
        self.image_shape, self.latent_shape = [int(s) for s in self.image_shape], [int(s) for s in self.latent_shape]
        if len(self.image_shape) != 3 or len(self.latent_shape) != 3 or min(self.image_shape + self.latent_shape) <= 0:
            raise HatrefineError(f"image and latent shapes must be three positive sizes C,H,W; got {self.image_shape} and {self.latent_shape}")
        if self.image_shape[1] != self.image_shape[2] or self.latent_shape[1] != self.latent_shape[2]:
            raise HatrefineError(f"the autoencoder needs square images and latents; got {self.image_shape} and {self.latent_shape}")
        _levels(self.image_shape[1], self.latent_shape[1])
        if self.decoder not in DECODERS:
            raise HatrefineError(f"unknown decoder {self.decoder!r}; use {' or '.join(DECODERS)}")
        if self.decoder == "resnet" and self.image_shape[1] != 2 * self.latent_shape[1]:
            raise HatrefineError(
                f"--decoder resnet (the authors' gen_decoder) doubles the latent's side once; got latent {self.latent_shape} for images {self.image_shape}: use --latent-shape C,{self.image_shape[1] // 2},{self.image_shape[1] // 2}"
            )
        for name in ("width", "steps", "batch_size", "log_every", "save_every"):
            if getattr(self, name) <= 0:
                raise HatrefineError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.gen_factor > 0:
            raise HatrefineError(f"--gen-factor must be positive, got {self.gen_factor}")
        if self.lr <= 0 or self.latent_noise < 0:
            raise HatrefineError(f"--lr must be positive and --latent-noise >= 0, got {self.lr} and {self.latent_noise}")

    def kwargs(self) -> dict:
        return {"channels": self.image_shape[0], "size": self.image_shape[1], "latent_shape": self.latent_shape, "width": self.width}

    def value_range(self) -> Optional[list]:
        from .config import learned_output_range

        r = learned_output_range(self.gen_factor)
        return None if r is None else list(r)

    def decoder_architecture(self) -> str:
        return {"conv": "ae_decoder", "resnet": "sngan_resnet_decoder"}[self.decoder]

    def decoder_kwargs(self) -> dict:
        if self.decoder == "resnet":
            top = self.width << _levels(self.image_shape[1], self.latent_shape[1])
            return {"latent_channels": self.latent_shape[0], "width": top, "out_channels": self.image_shape[0], "out_factor": self.gen_factor}
        return self.kwargs() | {"out_factor": self.gen_factor}


class AutoencoderTrainer(TrainingLoop):
    """Pretrains an autoencoder into ``out``; ``resume=True`` continues it exactly (``run()``: ``hatrefine.loop``)."""

    name = "pretrain-ae"

    def __init__(self, config: Optional[AEConfig], out: str | Path, resume: bool = False, overwrite: bool = False, steps: Optional[int] = None):
        self.out = Path(out)
        with opening_run_dir(self.out, resume, overwrite, CONFIG):
            self._open(config, resume, steps)

    def _open(self, config: Optional[AEConfig], resume: bool, steps: Optional[int]) -> None:
        from .refiner import resolve_device
        from .trainer import versions

        if resume:
            source = self.out / CONFIG
            saved = read_json(source)
            check_version(saved, str(source))
            if not isinstance(saved.get("autoencoder"), dict):
                raise HatrefineError(f"{self.out} is not an autoencoder directory (no 'autoencoder' in {CONFIG}); pass the --out of pretrain-ae")
            config = settings_from_dict(AEConfig, {**saved["autoencoder"], **({"steps": steps} if steps is not None else {})}, str(source), legacy={"tensorboard": False, "gen_factor": 1.0, "recipe": None, "decoder": "conv"})
        elif config is None:
            raise HatrefineError("a new autoencoder needs its settings (an AEConfig)")
        if config.tensorboard:
            require_tensorboard()  # before anything is written
        self.config = c = config
        self.device = resolve_device(c.device)
        torch.manual_seed(c.seed)
        self.data = DataStream(open_dataset(c.data, c.image_shape, split="train", root=c.data_root), c.batch_size, c.seed)
        self.encoder = Encoder(**c.kwargs()).to(self.device)
        self.decoder = create_architecture(c.decoder_architecture(), **c.decoder_kwargs()).to(self.device)
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
        decoder = {"architecture": c.decoder_architecture(), "kwargs": c.decoder_kwargs()} | {"latent_shape": c.latent_shape, "image_shape": c.image_shape, "prior": None, "value_range": c.value_range()}
        return {"format_version": FORMAT_VERSION, "generator": decoder, "encoder": entry("ae_encoder"), "autoencoder": dataclasses.asdict(c), "versions": versions}

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
        self.decoder.eval()  # (the ResNet decoder's batch norm: its running statistics, left as trained)
        try:
            self._save_figures(n)
        finally:
            self.decoder.train()

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
        save_tensors(self.out / DECODER_WEIGHTS, self.decoder.state_dict())

    def _load_state(self, t: dict[str, torch.Tensor], meta: dict) -> None:
        load_strict(self.encoder, subdict(t, "encoder"), str(self.out))
        load_strict(self.decoder, subdict(t, "decoder"), str(self.out))
        load_optimizer(self.opt, t, "opt", meta["param_groups"])
        self.rng.set_state(t["rng"])
        torch.set_rng_state(t["torch_rng"])
        self.step = meta["step"]
        self.log.truncate(meta["log_rows"])
