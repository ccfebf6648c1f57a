"""torch_bridge.verification: torch-free, and its numpy EER is the JAX EER of jaxprobe.stats
(one definition in two places: torch_bridge may not import jaxprobe)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxprobe.stats import eer as jax_eer
from torch_bridge.verification import cosine_scores, eer, verification_trials

ROOT = Path(__file__).resolve().parents[2]


def test_importing_verification_loads_no_torch():
    code = "import sys, torch_bridge.verification; sys.exit(('torch' in sys.modules) * 1)"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, "torch_bridge.verification loaded torch" if res.returncode == 1 else res.stderr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_eer_equals_the_jax_eer(seed):
    rng = np.random.default_rng(seed)
    speakers = rng.integers(0, 4, 24).astype(str)
    pairs, labels = verification_trials(speakers)
    emb = rng.normal(size=(24, 8))
    emb[:, 0] += 2.0 * speakers.astype(int)  # some speaker information, so the EER is not 0.5
    scores = np.round(cosine_scores(emb, pairs), 2)  # ties
    assert len(np.unique(scores)) < len(scores)
    assert eer(scores, labels) == pytest.approx(float(jax_eer(scores, labels)), abs=1e-6)
