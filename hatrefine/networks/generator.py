"""The generator adapter: one interface that every frozen generator is seen through.

Inside hatrefine every image is a float tensor (N, C, H, W) with values in [-1, 1].
A ``Generator`` wraps the user's module, maps its declared output range onto [-1, 1],
freezes it (no parameter gradients, batch norm and dropout always in inference mode),
and checks the shapes of what goes in and comes out.
"""

from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from hatrefine.errors import HatrefineError


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


class _CallableModule(nn.Module):
    """Lets a plain callable (function, lambda) sit where a module is expected."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


class Generator(nn.Module):
    """A frozen generator G: latents of ``latent_shape`` -> images of ``image_shape`` in [-1, 1].

    Args:
        module: the decoder (an ``nn.Module`` or any callable on a batch of latents).
        latent_shape: shape of one latent, e.g. ``(128,)`` or ``(1, 16, 16)``.
        image_shape: shape of one output image ``(C, H, W)``.
        prior: ``"normal"`` for a N(0, I) latent prior (GANs, VAEs), ``None`` when the
            generator has none (a deterministic autoencoder).
        value_range: the range the module's raw output lives in; it is mapped to [-1, 1].
            ``None``: unbounded output, used as is (no range check).
        name: the spec or a short description, used in error messages.
        encoder: optional images (N, C, H, W) in [-1, 1] -> latents, e.g. a VAE's encoder: a
            callable of the frozen ``module`` (a bound method), so it moves and freezes with it.
        classes: for a class-conditional generator whose class is drawn per sample: the last
            ``classes`` entries of each (1-D) latent are a one-hot class, drawn uniformly by
            ``sample_latent`` and held fixed by every chain and inversion (``latent_mask``).
    """

    def __init__(
        self,
        module: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        latent_shape: Sequence[int],
        image_shape: Sequence[int],
        prior: Optional[str] = "normal",
        value_range: Optional[tuple[float, float]] = (-1.0, 1.0),
        name: str = "generator",
        encoder: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        classes: int = 0,
    ):
        super().__init__()
        if prior not in ("normal", None):
            raise HatrefineError(f"unknown prior {prior!r} for {name}; use 'normal' or None")
        if len(image_shape) != 3:
            raise HatrefineError(f"image_shape {tuple(image_shape)} for {name} is not (C, H, W); pass e.g. (3, 32, 32)")
        if any(int(s) <= 0 for s in (*latent_shape, *image_shape)):
            raise HatrefineError(f"shapes for {name} must be positive: latent {tuple(latent_shape)}, image {tuple(image_shape)}")
        if value_range is not None:
            value_range = (float(value_range[0]), float(value_range[1]))
            if not value_range[1] > value_range[0]:
                raise HatrefineError(f"value_range {value_range} for {name} is empty; pass (low, high) with low < high")
        if classes and not (len(latent_shape) == 1 and 0 < classes < int(latent_shape[0])):
            raise HatrefineError(f"{name}: {classes} one-hot classes need a 1-D latent longer than that, got {tuple(latent_shape)}")
        self.module = module if isinstance(module, nn.Module) else _CallableModule(module)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.prior = prior
        self.value_range = value_range
        self.name = name
        self.encoder = encoder
        self.classes = int(classes)
        self._range_checked = False
        for p in self.module.parameters():  # (ScriptModules have no requires_grad_)
            p.requires_grad_(False)
        self.module.eval()

    # -- freezing ---------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Generator":
        """The wrapper may be put in training mode; the wrapped generator never is."""
        self.training = mode
        self.module.eval()
        return self

    @property
    def has_prior(self) -> bool:
        return self.prior is not None

    def require_prior(self) -> None:
        """Conditional mode draws Z from the prior: refuse generators that have none."""
        if self.prior is None:
            raise HatrefineError(f"{self.name} has no latent prior, so --mode conditional does not apply; use --mode joint")

    @property
    def device(self) -> torch.device:
        t = next(itertools.chain(self.module.parameters(), self.module.buffers()), None)
        return t.device if t is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for t in self.module.parameters():
            return t.dtype
        return torch.get_default_dtype()

    # -- latents ----------------------------------------------------------------------
    def sample_latent(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Draw ``n`` latents from N(0, I); generators without a prior are sampled the same way
        (the point of a Hat EBM retrofit), the caller decides whether that is allowed."""
        if n <= 0:
            raise HatrefineError(f"number of latents must be positive, got {n}")
        device = generator.device if generator is not None else self.device
        z = torch.randn((n, *self.latent_shape), generator=generator, device=device)
        if self.classes:
            label = torch.randint(self.classes, (n,), generator=generator, device=device)
            z[:, -self.classes :] = nn.functional.one_hot(label, self.classes).to(z.dtype)
        return z.to(self.device, self.dtype)

    @property
    def latent_mask(self) -> Optional[torch.Tensor]:
        """1 on the latent entries chains may move, 0 on the held one-hot class (None: all move)."""
        if not self.classes:
            return None
        mask = torch.ones(self.latent_shape, device=self.device, dtype=self.dtype)
        mask[-self.classes :] = 0
        return mask

    def check_latent(self, z: torch.Tensor) -> None:
        if not isinstance(z, torch.Tensor):
            raise HatrefineError(f"latent for {self.name} must be a torch.Tensor, got {type(z).__name__}")
        if tuple(z.shape[1:]) != self.latent_shape or z.dim() != len(self.latent_shape) + 1:
            raise HatrefineError(f"latent has shape {_shape_str(z.shape)}; {self.name} expects (N, {', '.join(map(str, self.latent_shape))})")

    def require_encoder(self) -> None:
        """Starting latents from an encoder: refuse generators that have none."""
        if self.encoder is None:
            raise HatrefineError(f"{self.name} has no encoder; find the latents by inversion instead (--start invert)")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents of images ``x`` (N, C, H, W) in [-1, 1] from the generator's own encoder."""
        self.require_encoder()
        self.check_image(x, what="input images")
        with torch.no_grad():
            z = self.encoder(x)
        self.check_latent(z)
        return z

    # -- images -----------------------------------------------------------------------
    def check_image(self, x: torch.Tensor, what: str = "image batch") -> None:
        """Raise a clear error unless ``x`` is (N, C, H, W) with this generator's C, H, W."""
        c, h, w = self.image_shape
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = _shape_str(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise HatrefineError(f"{what} has shape {shape}; {self.name} works on (N, {c}, {h}, {w})")
        if x.shape[1] != c:
            raise HatrefineError(f"{what} has {x.shape[1]} channels; {self.name} works on {c} (shape (N, {c}, {h}, {w}))")
        if tuple(x.shape[2:]) != (h, w):
            raise HatrefineError(f"{what} is {x.shape[2]}x{x.shape[3]} pixels; {self.name} works on {h}x{w} (resize it first)")

    def check_range(self, x: torch.Tensor, what: str = "image batch", low: float = -1.0, high: float = 1.0, tol: float = 1e-3) -> None:
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if not (lo >= low - tol and hi <= high + tol):
            raise HatrefineError(f"{what} has values in [{lo:.3g}, {hi:.3g}]; expected [{low:g}, {high:g}] (rescale it, or declare value_range)")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents (N, *latent_shape) to images (N, C, H, W) in [-1, 1]."""
        self.check_latent(z)
        x = self.module(z)
        if not isinstance(x, torch.Tensor) or x.shape[0] != z.shape[0]:
            got = _shape_str(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise HatrefineError(f"{self.name} returned {got} for {z.shape[0]} latents; it must return (N, C, H, W) images")
        self.check_image(x, what=f"output of {self.name}")
        if self.value_range is None:
            return x
        lo, hi = self.value_range
        if not self._range_checked:  # a data-dependent check costs a device sync: do it once
            self.check_range(x, what=f"output of {self.name}", low=lo, high=hi, tol=1e-3 * (hi - lo))
            self._range_checked = True
        if (lo, hi) != (-1.0, 1.0):
            x = (x - lo) * (2.0 / (hi - lo)) - 1.0
        return x

    def extra_repr(self) -> str:
        held = f", classes={self.classes}" if self.classes else ""
        return f"name={self.name!r}, latent_shape={self.latent_shape}, image_shape={self.image_shape}, prior={self.prior!r}{held}"
