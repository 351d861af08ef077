"""Jobs that share the cores: the main job's fit alone, beside a second fit, and beside a
single-threaded fit, under each way idle OpenMP threads may wait: OpenMP's default (what
hatrefine did before it chose one), passive waiting, and a short spin before sleeping
(``GOMP_SPINCOUNT``).

Each fit runs ``--steps`` updates of the main job's settings and reports its median seconds per
update (``log.csv``); the side job is a second fit. Run it on an otherwise idle machine:

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


def fit(out: Path, steps: int, wait: dict, threads: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "HATREFINE_THREADS")} | wait
    args = ["hatrefine", *(["--threads", str(threads)] if threads else []), "fit", "--out", str(out), "--steps", str(steps)]
    args += ["--eval-samples", "0", "--no-calibrate", "--quiet", "--overwrite"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def seconds_per_update(run: Path) -> float:
    with open(run / "log.csv") as f:
        rows = [float(r["seconds_per_step"]) for r in csv.DictReader(f)]
    return statistics.median(rows[1:] or rows)  # the first update carries start-up work


def scenario(tmp: Path, steps: int, wait: dict, side: int | None) -> dict:
    """The main fit (torch's threads), alone (``side`` None) or beside a second fit with ``side``
    threads (0: torch's)."""
    t0 = time.time()
    jobs = {"main": fit(tmp / "main", steps, wait, None)}
    if side is not None:
        jobs["side"] = fit(tmp / "side", steps, wait, side or None)
    for name, job in jobs.items():
        if job.wait() != 0:
            raise SystemExit(f"{name} fit failed: {job.stderr.read()}")
    return {name: round(seconds_per_update(tmp / name), 3) for name in jobs} | {"wall_seconds": round(time.time() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    result = {"steps": args.steps, "cores": os.cpu_count(), "unit": "median seconds per update of each fit", "scenarios": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, wait in WAITS.items():
            for side, what in ((None, "alone"), (0, "beside a second fit (all cores each)"), (1, "beside a single-threaded fit")):
                key = f"{label}: {what}"
                result["scenarios"][key] = scenario(Path(tmp), args.steps, wait, side)
                print(key, result["scenarios"][key], flush=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
