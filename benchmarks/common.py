"""Helpers the benchmark scripts share (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

SCORE_CACHE = Path.home() / ".cache" / "hatrefine" / "benchmark-scores"  # Inception scores keyed by the images' bytes


@contextmanager
def measured(record: dict):
    """Wall seconds and peak memory of a block: process RSS (polled), and CUDA memory where used."""
    page = os.sysconf("SC_PAGE_SIZE")
    peak, done = [0], threading.Event()

    def poll():
        while not done.is_set():
            with open("/proc/self/statm") as f:
                peak[0] = max(peak[0], int(f.read().split()[1]) * page)
            done.wait(0.05)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    thread = threading.Thread(target=poll, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        yield record
    finally:
        done.set()
        thread.join()
        record["seconds"] = round(time.perf_counter() - start, 1)
        record["peak_rss_mib"] = round(peak[0] / 2**20)
        if torch.cuda.is_available():
            record["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)


def inception_fids(images: dict[str, torch.Tensor], data: str, inception: str, device: torch.device) -> tuple[dict[str, dict], dict]:
    """FID, precision, recall, density and coverage of each image set against the same cached
    reference (``data``'s train split; ``hatrefine.evaluation.metrics.fid``): ({name: scores}, reference info)."""
    from hatrefine.evaluation.inception import load_inception
    from hatrefine.evaluation.metrics import fid

    net = load_inception(inception, device)
    scores, info = {}, {}
    for name, x in images.items():
        key = hashlib.sha256(x.detach().float().cpu().contiguous().numpy().tobytes() + f"{data}|{net.source}".encode()).hexdigest()[:32]
        cached = SCORE_CACHE / f"{key}.json"
        if cached.is_file():  # the same images scored by an earlier benchmark: Inception is minutes a set here
            r = json.loads(cached.read_text())
        else:
            r = fid(x, data, net, split="train", progress=True)
            r = {k: r[k] for k in ("fid", "precision", "recall", "density", "coverage", "n_reference", "n_prdc_reference", "inception")}
            SCORE_CACHE.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(r))
        scores[name] = {"fid": round(r["fid"], 3), **{k: round(r[k], 4) for k in ("precision", "recall", "density", "coverage")}}
        info = {"reference": f"{data} train split", "n_reference": r["n_reference"], "n_prdc_reference": r["n_prdc_reference"], "inception": r["inception"]}
        print(f"{name:12s} " + ", ".join(f"{k} {v}" for k, v in scores[name].items()), flush=True)
    return scores, info


def classifier_scores(images: dict[str, torch.Tensor], data: str) -> dict[str, dict]:
    """The quick metric of the images' shape (the shipped LeNet for 1x32x32 digits, the emoji
    classifier for 3x32x32 colour): the Frechet distance in its features against ``data``'s train
    split, keyed ``NAME_fd`` (``lenet_fd``, ``emoji_fd``), and its class histogram of each image set ({name: scores})."""
    from hatrefine.data import load_images
    from hatrefine.evaluation.metrics import (
        class_histogram,
        class_probabilities,
        feature_scores,
        features,
        load_classifier,
        quick_net,
    )

    shape = tuple(next(iter(images.values())).shape[1:])
    spec, net = quick_net(shape), load_classifier(shape)
    real = features(net, load_images(data, shape, split="train"))
    scores = {}
    for name, x in images.items():
        classes = class_histogram(class_probabilities(x, net))
        scores[name] = {
            f"{spec.name}_fd": round(feature_scores(net, real, x)["fd"], 3),
            "label_entropy": classes["label_entropy"],
            "confidence": classes["confidence"],
            "class_frequencies": classes["frequencies"],
        }
        print(
            f"{name:12s} {spec.label} distance {scores[name][f'{spec.name}_fd']}, label entropy {classes['label_entropy']}, confidence {classes['confidence']}",
            flush=True,
        )
    return scores


def command_line() -> str:
    """This process's command, quoted so that it can be pasted into a shell."""
    import shlex
    import sys

    return "python " + shlex.join(sys.argv)


def header(args, device: torch.device) -> dict:
    """The start of every benchmark result: the command, seed, sample count and the machine."""
    import platform

    from hatrefine.files.schema import versions

    return {
        "command": command_line(),
        "seed": args.seed,
        "n_samples": args.n,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "versions": versions(),
    }


def write_json(path, result: dict) -> None:
    """Write a benchmark result (sorted keys, trailing newline; temp file + rename) and say so."""
    import json
    from pathlib import Path

    if path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        print(f"wrote {path}")
