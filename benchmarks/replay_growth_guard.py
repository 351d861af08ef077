"""Replay the divergence guard's energy-growth check (``--max-energy-growth``) on finished runs.

Reads each run's ``log.csv`` (the loss column is E_data - E_samples, one row per update) and
reports the largest growth of the median energy gap from one 50-update window to the next and
the update at which a fit with the guard would have rolled back. Used to choose the default
limit: it must stay silent on healthy fits and fire on the ones that blew up.

    python benchmarks/replay_growth_guard.py RUN_DIR [RUN_DIR ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from hatrefine.settings.config import FitConfig
from hatrefine.training.trainer import GROWTH_WINDOW, energy_gap_growth


def replay(run: Path, limit: float) -> dict:
    rows = list(csv.DictReader(open(run / "log.csv")))
    gaps, largest, fires_at = [], 0.0, None
    for n, row in enumerate(rows, start=1):
        gaps = (gaps + [abs(float(row["loss"]))])[-2 * GROWTH_WINDOW :]
        growth = energy_gap_growth(gaps, n)
        if growth is not None:
            largest = max(largest, growth)
            if fires_at is None and growth > limit:
                fires_at = n
    return {"run": str(run), "updates": len(rows), "largest_growth": round(largest, 2), "rolls_back_at": fires_at}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--limit", type=float, default=FitConfig.max_energy_growth)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = [replay(Path(r), args.limit) for r in args.runs]
    for r in rows:
        print(f"{r['run']:40s} {r['updates']:6d} updates  largest growth x{r['largest_growth']:<8g} rolls back at {r['rolls_back_at']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"window": GROWTH_WINDOW, "limit": args.limit, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
