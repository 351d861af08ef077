"""The documented layering (docs/guide.md, "Layout"): data flows one way, so a module imports only
from its own layer or the layers below (lazy imports inside functions included), the adapters too."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ["hatrefine.errors"],
    ["hatrefine.files"],  # weights, JSON run files, locks, the .npz format
    ["hatrefine.settings"],  # what a run is asked to do (torch-free)
    ["hatrefine.data", "hatrefine.distributed"],
    ["hatrefine.networks"],  # generator interface, registry, hats, residual blocks
    ["hatrefine.adapters"],  # every generator the registry can load
    ["hatrefine.sampling"],  # energy, Langevin, latent-space baselines
    ["hatrefine.models"],  # fitted models: load, sample, refine, save
    ["hatrefine.evaluation"],  # features, FID / PRDC, calibration, OOD, figures
    ["hatrefine.training"],  # the loop and the trainers
    ["hatrefine.cli", "hatrefine"],  # the command line and the package's public names
]
# The one upward edge, by design: the registry imports its plugins on first use.
PLUGIN_DISCOVERY = {("hatrefine.networks.registry", "hatrefine.adapters")}


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name (``adapters/`` installs as ``hatrefine.adapters``)."""
    found = {}
    for top, prefix in ((ROOT / "hatrefine", "hatrefine"), (ROOT / "adapters", "hatrefine.adapters")):
        for p in top.rglob("*.py"):
            parts = list(p.relative_to(top).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([prefix, *parts])] = p
    return found


def imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The modules of ``mods`` that ``name`` (at ``path``) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    out = set()
    for target in found:
        while target not in mods and "." in target:  # a name inside a module counts as that module
            target = target.rpartition(".")[0]
        if target in mods and target != name:
            out.add(target)
    return out


def layer_of(name: str) -> int:
    best = max((g for layer in LAYERS for g in layer if name == g or name.startswith(g + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def upward_imports(mods: dict[str, Path]) -> list[str]:
    out = []
    for name, path in sorted(mods.items()):
        for target in sorted(imports(name, path, mods)):
            if layer_of(target) > layer_of(name) and (name, target) not in PLUGIN_DISCOVERY:
                out.append(f"{name} -> {target}")
    return out


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)  # raises where a module belongs to no layer


def test_modules_import_only_from_their_layer_or_below():
    assert not upward_imports(modules()), "imports against the layering"


def test_the_check_sees_an_upward_import_in_an_adapter(tmp_path):
    bad = tmp_path / "mine.py"
    bad.write_text("def load():\n    import hatrefine.training.autoencoder as ae\n")
    mods = {"hatrefine.adapters.mine": bad, "hatrefine.training.autoencoder": ROOT / "hatrefine/training/autoencoder.py"}
    assert upward_imports(mods) == ["hatrefine.adapters.mine -> hatrefine.training.autoencoder"]
    bad.write_text("from hatrefine.networks.generator import Generator\n")
    assert upward_imports(mods | {"hatrefine.networks.generator": ROOT / "hatrefine/networks/generator.py"}) == []


def test_loading_a_generator_imports_no_training_model_or_evaluation_code():
    code = (
        "import sys\n"
        "from hatrefine.networks.registry import load_discriminator, load_generator\n"
        "load_generator('builtin:mnist'); load_discriminator('builtin:mnist')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('hatrefine.training', 'hatrefine.models', 'hatrefine.evaluation', 'hatrefine.cli'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
