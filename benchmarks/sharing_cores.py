"""Jobs that share the cores: the main job's fit alone, beside a second fit, beside a
single-threaded fit and beside an eval (Inception features on the CPU), under each way idle OpenMP threads may wait: OpenMP's default (what
hatrefine did before it chose one), passive waiting, and a short spin before sleeping
(``GOMP_SPINCOUNT``).

Each fit runs ``--steps`` updates of the main job's settings and reports its median seconds per
update (``log.csv``). Run it on an otherwise idle machine:

    python benchmarks/sharing_cores.py --steps 20      # about 10 minutes on 2 CPU cores
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "results" / "sharing_cores.json"


WAITS = {  # the environment of each way of waiting; an empty OMP_WAIT_POLICY leaves OpenMP's default
    "openmp default": {"OMP_WAIT_POLICY": ""},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 10k then sleep": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
}


def job_env(wait: dict) -> dict:
    """This process's environment without any thread or waiting setting, plus ``wait``."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "HATREFINE_THREADS")} | wait


def fit(out: Path, steps: int, wait: dict, threads: int | None) -> subprocess.Popen:
    env = job_env(wait)
    args = ["hatrefine", *(["--threads", str(threads)] if threads else []), "fit", "--out", str(out), "--steps", str(steps)]
    args += ["--eval-samples", "0", "--no-calibrate", "--quiet", "--overwrite"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def evaluation(tmp: Path, wait: dict) -> subprocess.Popen:
    """``hatrefine eval`` of 64 generator samples against 300 uncached reference digits: Inception on a CPU."""
    env = job_env(wait)
    samples = tmp / "samples.npz"
    if not samples.is_file():
        subprocess.run(["hatrefine", "generate", "--n", "64", "--out", str(samples)], check=True, capture_output=True)
    env["HATREFINE_CACHE"] = str(tmp / f"cache-{time.time_ns()}")  # a fresh cache: the reference is extracted every time
    args = ["hatrefine", "eval", "--samples", str(samples), "--data", "builtin:mnist", "--n-ref", "300", "--quiet"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def seconds_per_update(run: Path) -> float:
    with open(run / "log.csv") as f:
        rows = [float(r["seconds_per_step"]) for r in csv.DictReader(f)]
    return statistics.median(rows[1:] or rows)  # the first update carries start-up work


def scenario(tmp: Path, steps: int, wait: dict, side: int | str | None) -> dict:
    """The main fit (torch's threads), alone (``side`` None), beside a second fit with ``side``
    threads (0: torch's) or beside an eval (``side`` "eval", started first)."""
    t0 = time.time()
    jobs = {"eval": evaluation(tmp, wait)} if side == "eval" else {}
    jobs["main"] = fit(tmp / "main", steps, wait, None)
    if isinstance(side, int):
        jobs["side"] = fit(tmp / "side", steps, wait, side or None)
    for name, job in jobs.items():
        if job.wait() != 0:
            raise SystemExit(f"{name} failed: {job.stderr.read()}")
        if name == "eval":
            eval_seconds = round(time.time() - t0, 1)
    out = {name: round(seconds_per_update(tmp / name), 3) for name in jobs if name != "eval"} | {"wall_seconds": round(time.time() - t0, 1)}
    return out | ({"eval_seconds": eval_seconds} if side == "eval" else {})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--eval-only", action="store_true", help="only the scenarios beside an eval (added to the JSON)")
    args = p.parse_args()
    result = {"steps": args.steps, "cores": os.cpu_count(), "unit": "median seconds per update of each fit", "scenarios": {}}
    sides = (
        (None, "alone"),
        (0, "beside a second fit (all cores each)"),
        (1, "beside a single-threaded fit"),
        ("eval", "beside an eval (Inception, all cores)"),
    )
    if args.eval_only:
        result, sides = json.loads(OUT.read_text()), sides[-1:]
    with tempfile.TemporaryDirectory() as tmp:
        for label, wait in WAITS.items():
            for side, what in sides:
                key = f"{label}: {what}"
                result["scenarios"][key] = scenario(Path(tmp), args.steps, wait, side)
                print(key, result["scenarios"][key], flush=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
