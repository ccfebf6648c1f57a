"""The Highway probe: shapes, frame-wise locality, a plain float64 reference, batch consistency."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe.probe import ProbeConfig, apply_probe, init_probe, predict


def _reference(params, h, rate):
    """Plain float64 numpy forward of one probe, written out frame by frame."""
    P = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    k, b = P["up"]["dense"]["kernel"], P["up"]["dense"]["bias"]
    width = k.shape[1] // rate
    out = []
    for t in range(h.shape[0]):
        up = h[t] @ k + b
        for j in range(rate):
            x = up[j * width:(j + 1) * width]
            for i in range(4):
                hw = P["body"][f"highway_{i}"]
                tr = np.maximum(x @ hw["transform"]["kernel"] + hw["transform"]["bias"], 0.0)
                g = 1.0 / (1.0 + np.exp(-(x @ hw["gate"]["kernel"] + hw["gate"]["bias"])))
                x = g * tr + (1.0 - g) * x
            out.append(x @ P["body"]["out"]["kernel"] + P["body"]["out"]["bias"])
    return np.stack(out)


@pytest.mark.parametrize("rate", [1, 4])
def test_matches_float64_reference(x64, key, rate):
    h = np.random.default_rng(0).standard_normal((5, 12))
    params = init_probe(key, 12, rate=rate, dtype=jnp.float64)
    # non-trivial gates and biases
    params = jax.tree.map(lambda a: a + 0.1 * jnp.sin(jnp.arange(a.size).reshape(a.shape)), params)
    got = apply_probe(params, jnp.asarray(h), rate=rate)
    assert got.shape == (5 * rate, 80) and got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), _reference(params, h, rate), rtol=1e-12, atol=1e-12)


def test_paper_shapes_and_own_weights(key):
    params = init_probe(key, 256, rate=8)
    assert params["up"]["dense"]["kernel"].shape == (256, 80 * 8)
    layers = [params["body"][f"highway_{i}"]["transform"]["kernel"] for i in range(4)]
    assert all(layer.shape == (80, 80) for layer in layers)
    assert not np.allclose(layers[0], layers[1])  # each Highway layer has its own weights
    np.testing.assert_array_equal(params["body"]["highway_0"]["gate"]["bias"], -1.0)
    assert params["body"]["out"]["kernel"].shape == (80, 80)
    assert params["up"]["dense"]["kernel"].dtype == jnp.float32


def test_framewise_no_context(key):
    """Changing activation frame t changes exactly mel frames t*r .. t*r+r-1."""
    r = 2
    params = init_probe(key, 8, rate=r)
    h = jax.random.normal(jax.random.key(1), (6, 8))
    base = apply_probe(params, h, rate=r)
    changed = apply_probe(params, h.at[3].add(1.0), rate=r)
    diff = np.abs(np.asarray(changed - base)).max(axis=1)
    assert np.all(diff[6:8] > 1e-4)
    assert np.all(diff[:6] == 0) and np.all(diff[8:] == 0)


@pytest.mark.parametrize("batch", [1, 3])
def test_batch_consistency(key, batch):
    params = init_probe(key, 8, rate=2)
    h = jax.random.normal(jax.random.key(2), (batch, 5, 8))
    got = predict(params, h, rate=2)
    want = jnp.stack([predict(params, h[i], rate=2) for i in range(batch)])
    assert got.shape == (batch, 10, 80)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_predict_rejects_wrong_width(key):
    params = init_probe(key, 8, rate=2)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., T, 8\)"):
        predict(params, jnp.zeros((5, 9)), rate=2, probe=ProbeConfig())
