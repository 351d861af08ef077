"""torchrun with 2 CPU processes (gloo) gives the result of one process on the same global batch."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hatrefine.files.checkpoint import read_state_dict

FIT = [
    "--steps",
    "3",
    "--batch-size",
    "8",
    "--langevin-steps",
    "3",
    "--hat-width",
    "4",
    "--eval-samples",
    "0",
    "--no-calibrate",
    "--device",
    "cpu",
    "--quiet",
    "--lr",
    "2e-4",
    "--grad-penalty",
    "1e-2",
]  # the penalty's double backward under DDP too
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def cli(*args, nproc=1, **env):
    # `--no-python --`: everything after is the command, so torchrun cannot take --run or --n for its own options
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "--no-python", "--"] if nproc > 1 else []
    result = subprocess.run([*launcher, sys.executable, "-m", "hatrefine.cli", *map(str, args)], capture_output=True, text=True, env=ENV | env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def assert_same_state(a, b, steps, lr):
    """The gradient statistics (Adam's moments) agree to float precision: the ranks averaged the
    gradients of the global batch. Weights agree within Adam's reach of float noise: a parameter
    whose true gradient is ~0 (a bias that the loss barely sees) moves by up to lr per step on
    the noise of summation order, so weights can differ by up to 2 * lr * steps."""
    sa, sb = read_state_dict(a / "checkpoint" / "state.safetensors"), read_state_dict(b / "checkpoint" / "state.safetensors")
    assert sa.keys() == sb.keys()
    for k in sa:
        if not sa[k].is_floating_point():
            assert torch.equal(sa[k], sb[k]), k
        elif ".exp_avg" in k:
            scale = sa[k].abs().max().item()
            torch.testing.assert_close(sa[k], sb[k], atol=1e-4 * scale + 1e-12, rtol=1e-3, msg=k)
        else:
            torch.testing.assert_close(sa[k], sb[k], atol=2 * lr * steps, rtol=0, msg=k)


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_fit_on_two_processes_equals_one_process(tmp_path):
    cli("fit", "--out", tmp_path / "one", *FIT)
    cli("fit", "--out", tmp_path / "two", *FIT, nproc=2)
    assert_same_state(tmp_path / "one", tmp_path / "two", steps=3, lr=2e-4)
    one = (tmp_path / "one" / "log.csv").read_text().splitlines()
    two = (tmp_path / "two" / "log.csv").read_text().splitlines()
    assert len(one) == len(two) == 4  # header + 3 steps, written once (by rank 0)
    keep = [0, 1, 4, 5, 6, 7]  # step, loss, lr, eps_y, eps_z, residual norm (energy levels drift with the biases)
    for r1, r2 in zip(one[1:], two[1:]):
        np.testing.assert_allclose([float(r1.split(",")[i]) for i in keep], [float(r2.split(",")[i]) for i in keep], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_synthesize_sample_and_eval_on_two_processes(tmp_path):
    args = [
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--bank-size",
        "16",
        "--langevin-steps",
        "2",
        "--hat-width",
        "4",
        "--generator-width",
        "8",
        "--eval-samples",
        "0",
        "--device",
        "cpu",
        "--quiet",
    ]
    cli("synthesize", "--out", tmp_path / "one", *args)
    cli("synthesize", "--out", tmp_path / "two", *args, nproc=2)
    assert_same_state(tmp_path / "one", tmp_path / "two", steps=2, lr=1e-4)  # both networks, both optimizers, the bank

    cli("sample", "--run", tmp_path / "one", "--n", 10, "--batch-size", 3, "--out", tmp_path / "s1.npz")
    cli("sample", "--run", tmp_path / "one", "--n", 10, "--batch-size", 3, "--out", tmp_path / "s2.npz", nproc=2)
    with np.load(tmp_path / "s1.npz") as a, np.load(tmp_path / "s2.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            np.testing.assert_allclose(a[k], b[k], atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s")) == ["s1.npz", "s2.npz"]  # shards merged and removed


def _inception_on_disk():
    from hatrefine.evaluation.inception import fid_helper_weights, pytorch_fid_weights

    return fid_helper_weights() is not None or pytorch_fid_weights().is_file()


@pytest.mark.slow
@pytest.mark.skipif(not _inception_on_disk(), reason="needs Inception weights on disk")
def test_eval_on_two_processes_equals_one_process(tmp_path):
    import json

    cli("generate", "--n", 12, "--out", tmp_path / "g.npz")
    env = ["--n-ref", 10, "--quiet"]
    # separate caches: both the reference and the sample statistics are computed on the ranks
    cli("eval", "--samples", tmp_path / "g.npz", "--json", tmp_path / "one.json", *env, HATREFINE_CACHE=str(tmp_path / "c1"))
    cli("eval", "--samples", tmp_path / "g.npz", "--json", tmp_path / "two.json", *env, nproc=2, HATREFINE_CACHE=str(tmp_path / "c2"))
    assert len(list((tmp_path / "c2" / "fid").iterdir())) == 1  # written once, by rank 0
    one, two = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert one["n_samples"] == two["n_samples"] == 12 and two["n_reference"] == 10
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6)
