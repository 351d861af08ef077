"""The documented layering (docs/guide.md, "Layout"): data flows one way, so a module of hatrefine/
imports only from modules in lower layers (lazy imports inside functions included)."""

import ast
from pathlib import Path

LAYERS = [
    ["errors", "resblocks"],
    ["schema"],
    ["checkpoint", "io", "distributed", "events", "inception", "data"],  # files, processes, data
    ["generator"],  # the adapter interface
    ["registry", "hat"],
    ["energy"],
    ["sampler"],
    ["recipes"],  # the paper's experiments as settings
    ["config"],
    ["evaluation", "ddls"],
    ["refiner", "calibration"],  # the fitted model
    ["latent_prior"],  # the rival family: an EBM on the latents
    ["runs", "report", "ood"],
    ["loop"],  # the training-loop skeleton
    ["trainer", "hub"],
    ["synthesis", "autoencoder", "prior_trainer"],
    ["hierarchical"],  # the multi-layer generator with its joint latent prior
    ["cli", "__init__"],
]
PACKAGE = Path(__file__).resolve().parents[1] / "hatrefine"


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            found |= {n.split(".")[0] for n in names if n}
    return found


def test_every_module_has_a_layer():
    placed = {m for layer in LAYERS for m in layer}
    assert placed == {p.stem for p in PACKAGE.glob("*.py")}, "place new modules in LAYERS (and in docs/guide.md's Layout)"


def test_modules_import_only_from_lower_layers():
    rank = {m: i for i, layer in enumerate(LAYERS) for m in layer}
    upward = [f"{p.stem} -> {d}" for p in sorted(PACKAGE.glob("*.py")) for d in sorted(imports(p)) if d in rank and rank[d] >= rank[p.stem] and d != p.stem]
    assert not upward, f"imports against the layering: {upward}"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "data.py"
    bad.write_text("def f():\n    from .trainer import Trainer\n")
    assert "trainer" in imports(bad)
