"""The shared per-item CKA (jaxprobe._cka_items): jaxprobe.cka(clean, noisy) with the clean
(U, n, d) broadcast against the noisy (..., U, n, d), in both argument orders, and the
sweep's per-utterance path, against the float64 reference (tests/reference/cka_ref.py)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxprobe
from jaxprobe import _cka_items
from jaxprobe.studies.sweep.analysis import per_item_cka_all
from tests.reference import cka_ref


def _data(rng, S=3, K=5, U=4, n=16, d=40):
    clean = rng.standard_normal((U, n, d))
    noisy = clean[None, None] + rng.uniform(0.2, 2.0, (S, K, 1, 1, 1)) * rng.standard_normal((S, K, U, n, d))
    return clean, noisy


def _ref(clean, noisy, debiased):
    out = np.empty(noisy.shape[:-2])
    for idx in np.ndindex(*noisy.shape[:-2]):
        out[idx] = cka_ref.cka(cka_ref.linear_gram(clean[idx[-1]]), cka_ref.linear_gram(noisy[idx]), debiased=debiased)
    return out


@pytest.mark.parametrize("debiased", [False, True])
def test_broadcast_items_match_float64_reference(x64, rng, debiased):
    clean, noisy = _data(rng)  # 15 (S, K) cells: the loop's last step overlaps for cells = 2, 4, 8
    want = _ref(clean, noisy, debiased)
    for A, B in ((clean, noisy), (noisy, clean)):
        got = np.asarray(jaxprobe.cka(jnp.asarray(A), jnp.asarray(B), debiased=debiased))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    for cells in (1, 2, 4, 8, 15):
        out, rx, ry = _cka_items.item_cka(jnp.asarray(noisy), jnp.asarray(clean), debiased_flags=(debiased,), cells=cells)
        np.testing.assert_allclose(np.asarray(out[0]), want, rtol=1e-10, atol=1e-12)
        assert rx.shape == noisy.shape[:3] and ry.shape == clean.shape[:1]


def test_float32_within_1e5_of_float64(rng):
    clean, noisy = _data(rng, d=128)
    want = _ref(clean, noisy, False)
    got = np.asarray(jaxprobe.cka(clean.astype(np.float32), noisy.astype(np.float32)))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_values_do_not_depend_on_position_or_cells_count(rng):
    """Bit-identical per item whatever the number of cells (the sweep's device pieces)."""
    clean, noisy = _data(rng)
    clean, noisy = jnp.asarray(clean, jnp.float32), jnp.asarray(noisy, jnp.float32)
    a = np.asarray(_cka_items.item_cka(noisy, clean, debiased_flags=(False,), cells=4)[0])
    b = np.asarray(_cka_items.item_cka(noisy[1:], clean, debiased_flags=(False,), cells=4)[0])
    np.testing.assert_array_equal(a[:, 1:], b)


def test_sweep_path_is_the_same_implementation(rng):
    clean, noisy = _data(rng)
    clean, noisy = clean.astype(np.float32), noisy.astype(np.float32)
    got = per_item_cka_all(noisy, clean, estimators=("biased", "debiased"))
    for est in ("biased", "debiased"):
        np.testing.assert_array_equal(np.asarray(got[est]),
                                      np.asarray(jaxprobe.cka(clean, noisy, debiased=est == "debiased")))


def test_constant_and_nan_items_are_named_in_the_broadcast_path(rng):
    clean, noisy = _data(rng)
    clean, noisy = clean.astype(np.float32), noisy.astype(np.float32)
    bad = noisy.copy()
    bad[2, 1, 3] = 7.0
    with pytest.raises(ValueError, match=r"'Y' parameter of cka is a constant representation at batch index \(2, 1, 3\)"):
        jaxprobe.cka(clean, bad)
    with pytest.raises(ValueError, match=r"'X' parameter of cka is a constant representation at batch index \(2, 1, 3\)"):
        jaxprobe.cka(bad, clean)
    c2 = clean.copy()
    c2[1] = 0.0
    with pytest.raises(ValueError, match=r"'X' parameter of cka is a constant representation at batch index \(1,\)"):
        jaxprobe.cka(c2, noisy)
    nan = noisy.copy()
    nan[0, 4, 2, 5, 9] = np.nan
    with pytest.raises(ValueError, match=r"'Y' parameter of cka must be finite"):
        jaxprobe.cka(clean, nan)
