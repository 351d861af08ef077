"""`hatrefine --help` answers without importing torch, and `import hatrefine` leaves matplotlib's backend alone."""

import subprocess
import sys

HEAVY = ("torch", "matplotlib", "numpy", "hatrefine.training", "hatrefine.models")


def _loaded_after(code: str) -> list[str]:
    probe = code + f"\nimport sys\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def test_help_imports_no_torch():
    code = "from hatrefine.cli import main\nfor args in (['--help'], ['fit', '--help'], ['fit-prior', '--help'], ['pretrain-ae', '--help']):\n    try:\n        main(args)\n    except SystemExit as e:\n        assert e.code == 0, args\n"
    assert _loaded_after(code) == "[]"


def test_import_hatrefine_is_light_and_its_names_load_on_use():
    assert _loaded_after("import hatrefine") == "[]"
    code = "import hatrefine\nassert hatrefine.HatRefiner.__name__ == 'HatRefiner'\nassert 'fit' in dir(hatrefine)"
    assert "torch" in _loaded_after(code)


def test_import_keeps_the_matplotlib_backend():
    code = "import matplotlib\nmatplotlib.use('svg')\nimport hatrefine.evaluation.report\nprint(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-1] == "svg"


def _threads_after(args: list[str], env: dict) -> str:
    code = (
        "from hatrefine.cli import main\ntry:\n    main("
        + repr(args)
        + ")\nexcept SystemExit:\n    pass\nimport os, torch\nprint(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])"
    )
    clean = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "HATREFINE_THREADS")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean | env).stdout.strip().splitlines()[-1]


def test_threads_option_and_setting_reach_torch_and_threads_wait_passively():
    default = _threads_after(["list"], {}).split()[0]
    assert default == str(__import__("torch").get_num_threads()) or "OMP_NUM_THREADS" in __import__("os").environ
    assert int(default) > 1, "on one core this test cannot tell --threads 1 from the default"
    assert _threads_after(["--threads", "1", "list"], {}) == "1 PASSIVE"
    assert _threads_after(["list"], {"HATREFINE_THREADS": "1"}) == "1 PASSIVE"
    assert _threads_after(["list"], {"OMP_WAIT_POLICY": "ACTIVE"}).endswith("ACTIVE")  # the user's own setting wins
