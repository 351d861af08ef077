"""A run's ``quality.json``: the before/after record of the fit and the calibration, checked when read back."""

from __future__ import annotations

from pathlib import Path

from hatrefine.files.jsonfiles import read_json, save_json
from hatrefine.files.names import QUALITY
from hatrefine.files.schema import FORMAT_VERSION, NUMBER, check_fields, check_version

QUALITY_FIELDS = {
    "n_samples": int, "langevin_steps": int, "temperature": NUMBER, "sample_seconds": NUMBER, "seed": int, "metric": str,
    "n_reference": int, "generator": NUMBER, "hat": NUMBER, "prdc_generator": dict, "prdc_hat": dict, "classes_generator": dict, "classes_hat": dict, "class_changed": NUMBER,
    "class_sure": NUMBER, "class_changed_if_sure": NUMBER, "class_changed_if_unsure": NUMBER, "changes_from_unsure": NUMBER, "line": str, "calibration": dict,
    "held_out": dict,
}  # fmt: skip
NULLABLE = ("class_changed_if_sure", "class_changed_if_unsure", "changes_from_unsure")  # None where no digit falls in the group


def read_quality(run: str | Path) -> dict:
    """A run's ``quality.json`` (the before/after record and the calibration), validated; {} if there is none."""
    path = Path(run) / QUALITY
    if not path.is_file():
        return {}
    record = read_json(path)
    check_version(record, str(path))
    check_fields(record, QUALITY_FIELDS, str(path), optional=QUALITY_FIELDS, nullable=NULLABLE)
    return {k: v for k, v in record.items() if k != "format_version"}


def write_quality(run: str | Path, record: dict) -> None:
    save_json(Path(run) / QUALITY, {"format_version": FORMAT_VERSION, **record})
