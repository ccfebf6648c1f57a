"""Shared fixtures: a PRNG key, paths to ../shared, float64 switching."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("JAXPROBE_SHARED", ROOT.parent / "shared"))
MUSE_DIR = SHARED / "muse"


@pytest.fixture
def key():
    import jax

    return jax.random.key(0)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled in JAX, restoring the setting afterwards."""
    import jax

    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


@pytest.fixture
def muse_dir():
    """../shared/muse; skips with a reason only where it is absent (CI has it)."""
    if not (MUSE_DIR / "g_best").exists():
        pytest.skip(f"needs {MUSE_DIR}/g_best (../shared is absent on this machine)")
    return MUSE_DIR


@pytest.fixture(autouse=True, scope="module")
def _release_jax_programs():
    """After each test module, drop JAX's compiled programs and traces (the suite compiles
    thousands; one process holding them all grew until an XLA compile aborted late in a run)."""
    yield
    import sys

    if "jax" in sys.modules:
        import gc

        sys.modules["jax"].clear_caches()
        gc.collect()
