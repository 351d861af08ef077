"""Training the quick quality figure's classifiers (the MNIST LeNet, the emoji classifier): the
examples that make the shipped assets call this one loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hatrefine.evaluation.metrics import LeNet


def train_classifier(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor, seed: int, steps: int, flips: bool = False) -> LeNet:
    """A ``LeNet`` of ``x``'s channels fitted to labels ``y`` on the images where ``train`` is True:
    Adam 1e-3, batch 128, a little Gaussian noise on every image (robust features) and, with
    ``flips``, random left-right flips; returned in eval mode."""
    torch.manual_seed(seed)
    net, g = LeNet(x.shape[1]), torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    idx_train = torch.nonzero(train).squeeze(1)
    for _ in range(steps):
        idx = idx_train[torch.randint(len(idx_train), (128,), generator=g)]
        xb = x[idx] + 0.1 * torch.randn(len(idx), *x.shape[1:], generator=g)
        if flips:
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb[flip] = xb[flip].flip(3)
        loss = F.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: LeNet, x: torch.Tensor, y: torch.Tensor) -> float:
    return (net(x).argmax(1) == y).float().mean().item()
