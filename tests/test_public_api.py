"""The public API is what each package's ``__all__`` says, whatever order names are touched
in (issue 13: importing the submodule ``torch_bridge.enhance`` for ``load_muse`` rebound the
package attribute ``enhance``, the function, to the module)."""
from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("jaxprobe", "torch_bridge")

# Run in a fresh interpreter: touch every public name in the given order, then import every
# submodule of the package (the import system binds each to its parent package), then check
# every name is still the object its defining module holds, and not a module.
_SCRIPT = r"""
import importlib, json, pkgutil, sys, types
order = json.loads(sys.argv[1])
bad = []
for pkg_name, name in order:
    pkg = importlib.import_module(pkg_name)
    getattr(pkg, name)
for pkg_name in {p for p, _ in order}:
    pkg = importlib.import_module(pkg_name)
    for m in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
        if ".configs" in m.name or m.name.endswith("__main__"):
            continue
        importlib.import_module(m.name)
for pkg_name, name in order:
    pkg = importlib.import_module(pkg_name)
    obj = getattr(pkg, name)
    exports = getattr(pkg, "_EXPORTS", None)
    home = exports[name] if exports else getattr(obj, "__module__", None)
    if isinstance(obj, types.ModuleType):
        bad.append(f"{pkg_name}.{name} is the module {obj.__name__}")
    elif home is None or getattr(importlib.import_module(home), name, None) is not obj:
        bad.append(f"{pkg_name}.{name} is not {home}.{name}")
    elif exports is None and not (callable(obj) or isinstance(obj, type)):
        bad.append(f"{pkg_name}.{name} is neither a function nor a class")
print(json.dumps(bad))
"""


def _submodules(pkg_name):
    pkg = importlib.import_module(pkg_name)
    return {m.name.rpartition(".")[2] for m in pkgutil.iter_modules(pkg.__path__)}


def _all_packages():
    out = list(PACKAGES) + ["jaxprobe_kernels"]
    for root in PACKAGES:
        pkg = importlib.import_module(root)
        out += [m.name for m in pkgutil.walk_packages(pkg.__path__, root + ".") if m.ispkg]
    return out


@pytest.mark.parametrize("pkg_name", _all_packages())
def test_no_public_name_is_also_a_submodule(pkg_name):
    """No public name may share its name with a module of its package (the import system
    rebinds the package attribute to the module when that module is first imported)."""
    pkg = importlib.import_module(pkg_name)
    public = set(getattr(pkg, "__all__", ())) or {n for n in vars(pkg) if not n.startswith("_")}
    clash = sorted(n for n in public & _submodules(pkg_name)
                   if not isinstance(getattr(pkg, n, None), type(pkg)))
    clash += sorted(n for n in set(getattr(pkg, "__all__", ())) & _submodules(pkg_name))
    assert not clash, f"{pkg_name}: public names that are also submodule names: {sorted(set(clash))}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_public_name_survives_any_touch_order(seed):
    import random

    names = [(p, n) for p in PACKAGES for n in importlib.import_module(p).__all__]
    random.Random(seed).shuffle(names)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(names)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_reported_call_works():
    """``torch_bridge.load_muse`` first, then ``torch_bridge.enhance`` is the function."""
    code = ("import torch_bridge; torch_bridge.load_muse; import types; "
            "assert callable(torch_bridge.enhance) and not isinstance(torch_bridge.enhance, types.ModuleType)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
