"""The house layout (issue 16): no import circle among the project's modules, at most two private
names imported across modules, and ``import jaxprobe`` loads no torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import import_graph  # noqa: E402


def test_the_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_graph.cycles(edges) == [["a", "b", "c"]]
    assert import_graph.cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_project_modules():
    _, edges, _ = import_graph.analyse()
    pruned = {m: {t for t in ts if not import_graph._is_package_parent(m, t)} for m, ts in edges.items()}
    assert import_graph.cycles(pruned) == []


def test_the_script_exits_cleanly():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "import cycles: 0" in res.stdout


def test_no_private_name_crosses_modules():
    """Issue 16: a helper used by another module gets a public name (none left)."""
    _, _, private = import_graph.analyse()
    assert private == [], private


def test_the_private_counter_sees_a_private_import(tmp_path, monkeypatch):
    pkg = tmp_path / "jaxprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _hidden():\n    return 1\n")
    (pkg / "b.py").write_text("from jaxprobe.a import _hidden\n")
    for folder in ("kernels", "torch_bridge", "bench"):
        (tmp_path / folder).mkdir()
    monkeypatch.setattr(import_graph, "ROOT", tmp_path)
    _, edges, private = import_graph.analyse()
    assert private == [("jaxprobe.b", "jaxprobe.a", "_hidden")]
    assert edges["jaxprobe.b"] == {"jaxprobe.a"}


def test_import_jaxprobe_loads_no_torch():
    code = "import sys, jaxprobe, jaxprobe.distributed, jaxprobe.bootstrap; sys.exit(('torch' in sys.modules) * 1)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, "importing jaxprobe loaded torch" if res.returncode == 1 else res.stderr


def test_kernels_are_imported_as_jaxprobe_kernels_only():
    """PyPI's unrelated ``kernels`` package may sit next to ours: no module imports the bare name."""
    import ast

    bad = []
    for folder in ("jaxprobe", "kernels", "torch_bridge", "bench", "tests", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "kernels" or n.startswith("kernels.")]
    assert not bad, bad


def test_validators_word_errors_alike():
    """One wording: torch_bridge cannot import jaxprobe's validators (data flows one way), so it keeps
    word-for-word copies; the same bad argument gets the same error from both."""
    from jaxprobe import _validate as jv
    from torch_bridge.data import record as tv

    cases = [
        ("check_int", (2.5, "n"), {"fn": "f"}), ("check_int", (True, "n"), {}),
        ("check_int", (0, "n"), {"fn": "f", "low": 1}), ("check_int", (9, "n"), {"low": 1, "high": 8}),
        ("check_int", (3, "n"), {"low": 1}),
        ("check_real", (float("nan"), "x"), {"fn": "f"}), ("check_real", (0.0, "level"), {"low": 0.0, "low_open": True}),
        ("check_real", (2.0, "x"), {"fn": "g", "low": 0.0, "high": 1.0}), ("check_real", ("1", "x"), {}),
        ("check_real", (np.bool_(True), "x"), {}), ("check_real", (-1, "t"), {"low": 0.0}),
        ("check_real", (np.float32(0.5), "x"), {"low": 0.0, "high": 1.0}),
        ("check_choice", ("mean", "rule"), {"choices": ("median", "bgh"), "fn": "f"}),
        ("check_choice", (True, "k"), {"choices": (1, 2)}), ("check_choice", (2.0, "k"), {"choices": (1, 2)}),
    ]

    def outcome(mod, name, args, kwargs):
        kwargs = dict(kwargs)
        if "choices" in kwargs:
            args = (*args, kwargs.pop("choices"))
        try:
            return "ok", getattr(mod, name)(*args, **kwargs)
        except (TypeError, ValueError) as e:
            return type(e).__name__, str(e)

    errors = 0
    for name, args, kwargs in cases:
        a, b = outcome(jv, name, args, kwargs), outcome(tv, name, args, kwargs)
        assert a == b, (name, args, kwargs, a, b)
        errors += a[0] != "ok"
    assert errors >= 10  # the table exercises the error paths, not only the happy ones


def test_study_modules_and_configs_load_no_torch():
    """The studies reach torch_bridge lazily: importing their runners, configs and the torch-free
    pieces they use (MUSE's constants, verification, the store reader) loads no torch."""
    code = ("import sys, jaxprobe.studies.sweep, jaxprobe.studies.hear, jaxprobe.studies.sweep.config, "
            "jaxprobe.studies.hear.config, jaxprobe.diffusion, jaxprobe.cli, torch_bridge.verification, "
            "torch_bridge.models.muse.layers; sys.exit(('torch' in sys.modules) * 1)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, "a study module loaded torch" if res.returncode == 1 else res.stderr
