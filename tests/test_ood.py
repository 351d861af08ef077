"""OOD scoring: AUROC on known scores, energies of a fitted run, the offline OOD data specs."""

import pytest
import torch

from hatrefine.data import load_images
from hatrefine.evaluation.ood import auroc


def test_auroc_of_a_separating_energy_is_one_and_reversed_zero():
    low, high = torch.rand(50), torch.rand(70) + 2
    assert auroc(low, high) == 1.0
    assert auroc(high, low) == 0.0


def test_auroc_of_a_constant_energy_is_one_half():
    assert auroc(torch.zeros(30), torch.zeros(40)) == 0.5


def test_auroc_matches_the_pairwise_definition_with_ties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 5, (40,), generator=g).float(), torch.randint(1, 6, (30,), generator=g).float()
    pairs = (b[None, :] > a[:, None]).double().mean() + 0.5 * (b[None, :] == a[:, None]).double().mean()
    assert auroc(a, b) == pytest.approx(float(pairs), abs=1e-12)


@pytest.mark.parametrize("spec", ["invert:builtin:mnist", "noise:gaussian", "noise:uniform", "sklearn:digits"])
def test_offline_ood_specs(spec):
    x = load_images(spec, (1, 32, 32), split="test", limit=20)
    assert x.shape == (20, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and x.std() > 0.1
    if spec.startswith("invert:"):
        assert torch.equal(x, -load_images("builtin:mnist", (1, 32, 32), split="test", limit=20))
