"""jaxprobe.diffusion_group_distances (closed form) against intra_layer's level distances
with every component (eigh), and its argument errors."""
from __future__ import annotations

import numpy as np
import pytest

from jaxprobe.diffusion import intra_layer
from jaxprobe.diffusion_closed import diffusion_group_distances


def _clouds(rng, L=2, S=8, K=5, d=12):
    snr = np.repeat(np.linspace(-5, 20, S), K)
    base = rng.normal(size=(L, 1, d))
    X = base + np.tanh(snr / 10)[None, :, None] * rng.normal(size=(L, 1, d)) + 0.1 * rng.normal(size=(L, S * K, d))
    return X, snr


@pytest.mark.parametrize("t", [0.5, 1.0])
def test_matches_all_component_eigh_level_distances_float64(x64, rng, t):
    X, snr = _clouds(rng)
    ref = intra_layer(X, snr, t=t, solver="eigh")
    labels = np.unique(snr, return_inverse=True)[1]
    got = np.asarray(diffusion_group_distances(X, labels, t=t))
    want = np.asarray(ref.level_distances)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * want.max())


def test_float32_close_to_float64(x64, rng):
    X, snr = _clouds(rng)
    labels = np.unique(snr, return_inverse=True)[1]
    got = diffusion_group_distances(X.astype(np.float32), labels)
    assert got.dtype == np.float32
    want = np.asarray(diffusion_group_distances(X, labels))
    assert np.max(np.abs(np.asarray(got) - want)) < 1e-3 * want.max()


def test_worded_errors(rng):
    X, snr = _clouds(rng)
    labels = np.unique(snr, return_inverse=True)[1]
    with pytest.raises(ValueError, match="'t' parameter of diffusion_group_distances must be 0.5 or 1"):
        diffusion_group_distances(X, labels, t=2.0)
    with pytest.raises(ValueError, match="'labels' parameter"):
        diffusion_group_distances(X, labels[:-1])
    bad = X.copy()
    bad[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        diffusion_group_distances(bad, labels)


def test_no_recompilation_on_second_call(rng):
    from jaxprobe import diffusion_closed as dc

    X, snr = _clouds(rng)
    labels = np.unique(snr, return_inverse=True)[1]
    diffusion_group_distances(X.astype(np.float32), labels)
    before = dc._batched._cache_size()
    diffusion_group_distances((X + 1).astype(np.float32), labels)
    assert dc._batched._cache_size() == before
