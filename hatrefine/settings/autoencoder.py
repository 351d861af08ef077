"""Settings of ``hatrefine pretrain-ae``: the deterministic autoencoder a retrofit samples from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from hatrefine.errors import HatrefineError

BATCH_NORMS = ("fixed", "batch")  # the authors' (inference mode throughout: statistics fixed at 0 and 1) | batch statistics
DECODERS = ("conv", "resnet")  # hatrefine's conv decoder; the authors' ResNet gen_decoder (C x 16 x 16 -> 32 x 32)


def latent_levels(size: int, latent_size: int) -> int:
    """Number of 2x resolution steps between the latent and the image."""
    k = max(0, (size // max(1, latent_size)).bit_length() - 1)
    if latent_size <= 0 or latent_size << k != size:
        raise HatrefineError(f"latent side {latent_size} does not divide image side {size} by a power of 2; use e.g. --latent-shape 1,{size // 2},{size // 2}")
    return k


@dataclass
class AEConfig:
    """Settings of ``hatrefine pretrain-ae`` (saved under ``autoencoder`` in config.json)."""

    command: ClassVar[str] = "pretrain-ae"
    recipe: Optional[str] = None  # the recipe the settings came from (hatrefine.settings.recipes)
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
    batch_norm: str = "fixed"  # BATCH_NORMS: how the ResNet decoder's batch norm trains ("batch" before this setting existed)

    def __post_init__(self):
        self.image_shape, self.latent_shape = [int(s) for s in self.image_shape], [int(s) for s in self.latent_shape]
        if len(self.image_shape) != 3 or len(self.latent_shape) != 3 or min(self.image_shape + self.latent_shape) <= 0:
            raise HatrefineError(f"image and latent shapes must be three positive sizes C,H,W; got {self.image_shape} and {self.latent_shape}")
        if self.image_shape[1] != self.image_shape[2] or self.latent_shape[1] != self.latent_shape[2]:
            raise HatrefineError(f"the autoencoder needs square images and latents; got {self.image_shape} and {self.latent_shape}")
        latent_levels(self.image_shape[1], self.latent_shape[1])
        if self.batch_norm not in BATCH_NORMS:
            raise HatrefineError(f"unknown --batch-norm {self.batch_norm!r}; use {' or '.join(BATCH_NORMS)}")
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
        from hatrefine.settings.config import learned_output_range

        r = learned_output_range(self.gen_factor)
        return None if r is None else list(r)

    def decoder_architecture(self) -> str:
        return {"conv": "ae_decoder", "resnet": "sngan_resnet_decoder"}[self.decoder]

    def decoder_kwargs(self) -> dict:
        if self.decoder == "resnet":
            top = self.width << latent_levels(self.image_shape[1], self.latent_shape[1])
            return {"latent_channels": self.latent_shape[0], "width": top, "out_channels": self.image_shape[0], "out_factor": self.gen_factor}
        return self.kwargs() | {"out_factor": self.gen_factor}
