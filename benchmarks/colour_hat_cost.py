"""What a fit's update costs on colour images, by hat: the paper's SN-GAN 32 hat at its width 256
(the default for 3x32x32 before the colour default), the same hat narrower, and the embedded
colour GAN's own discriminator (the default for ``builtin:twemoji`` now). The main job's other
settings (batch 32, K 20 simultaneous steps) on ``builtin:twemoji``; median seconds per update
after the first. Run it alone on the machine:

    python benchmarks/colour_hat_cost.py --steps 4     # about 10 minutes on 2 CPU cores
"""

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

from hatrefine.networks.hat import describe_hat
from hatrefine.settings.config import FitConfig
from hatrefine.training.resolve import resolve
from hatrefine.training.trainer import Trainer

OUT = Path(__file__).parent / "results" / "colour_hat_cost.json"
HATS = {
    "sngan32, width 256 (the paper's)": {"hat": "sngan32", "hat_width": 256},
    "sngan32, width 64": {"hat": "sngan32", "hat_width": 64},
    "the GAN's own discriminator (ndf 32)": {},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    result = {"steps": args.steps, "generator": "builtin:twemoji", "unit": "median seconds per update after the first", "hats": {}}
    for name, hat in HATS.items():
        with tempfile.TemporaryDirectory() as tmp:
            resolved = resolve(FitConfig, {"generator": "builtin:twemoji", "steps": args.steps, "eval_samples": 0, "calibrate": False, **hat})
            trainer = Trainer(resolved, Path(tmp) / "run")
            t0 = time.time()
            trainer.run(progress=False)
            with open(Path(tmp) / "run" / "log.csv") as f:
                per = [float(r["seconds_per_step"]) for r in csv.DictReader(f)]
        c = resolved.config
        result["hats"][name] = {
            "hat": describe_hat(c.hat, (3, 32, 32), c.hat_width, trainer.hat),
            "seconds_per_update": round(statistics.median(per[1:] or per), 2),
            "main_job_minutes": round(statistics.median(per[1:] or per) * 700 / 60, 1),  # 700 updates, as the main job
            "wall_seconds": round(time.time() - t0, 1),
        }
        print(name, result["hats"][name], flush=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
