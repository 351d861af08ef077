"""Every Python snippet in the README and docs runs as written; fits are cut to a few steps."""

import re
from pathlib import Path

import pytest

import hatrefine

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPETS = [(f"{p.name}:{i}", code) for p in DOCS for i, code in enumerate(re.findall(r"```python\n(.*?)```", p.read_text(), re.S))]
TINY = {"steps": 3, "langevin_steps": 2, "batch_size": 8, "eval_samples": 0, "calibrate": False}


@pytest.mark.parametrize("name, code", SNIPPETS, ids=[n for n, _ in SNIPPETS])
def test_snippet_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real_fit = hatrefine.fit
    monkeypatch.setattr(hatrefine, "fit", lambda *a, **kw: real_fit(*a, **(kw | TINY)))
    exec(compile(code, name, "exec"), {"__name__": "snippet"})


def test_the_readme_has_snippets():
    assert sum(n.startswith("README.md") for n, _ in SNIPPETS) >= 2
