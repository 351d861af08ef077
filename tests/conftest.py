import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HATREFINE_OFFLINE", "1")  # tests never download
torch.set_num_threads(min(2, torch.get_num_threads()))


class TinyDecoder(nn.Module):
    """A small generator with batch norm: latent (8,) -> (1, 8, 8) in (-1, 1)."""

    def __init__(self, nz: int = 8, channels: int = 1):
        super().__init__()
        self.fc = nn.Linear(nz, 16 * 4 * 4)
        self.bn = nn.BatchNorm2d(16)
        self.up = nn.ConvTranspose2d(16, channels, 4, 2, 1)

    def forward(self, z):
        h = torch.relu(self.bn(self.fc(z).view(-1, 16, 4, 4)))
        return torch.tanh(self.up(h))


@pytest.fixture
def tiny_generator():
    from hatrefine.adapters import wrap

    torch.manual_seed(0)
    module = TinyDecoder()
    module.train()
    with torch.no_grad():  # move batch-norm statistics off their defaults
        for _ in range(3):
            module(torch.randn(16, 8) * 2 + 1)
    return wrap(module, latent_shape=(8,), image_shape=(1, 8, 8), name="tiny")
