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


def _offset_data(rng, S=3, K=5, U=4, n=16, d=128):
    """Float32 items whose rows share a per-feature offset growing with the (S, K) cell, from
    none to 100x the rows' spread: constant statistics r from ~0.8 down to ~1e-4, both sides of
    ``RAW_MIN_RATIO``, some steps with both kinds of items."""
    clean, noisy = _data(rng, S, K, U, n, d)
    scale = np.array([0, 0.5, 1, 2, 3, 5, 8, 12, 30, 100, 0, 1, 100, 0, 2])[: S * K].reshape(S, K, 1, 1, 1)
    offset = rng.standard_normal((1, 1, 1, 1, d))
    return clean + offset[0, 0], noisy + scale * offset


def _ratio(a):
    m = a.mean(-2, keepdims=True)
    g = np.einsum("...cf,...df->...cd", a - m, a - m)
    gn = np.sqrt((g * g).sum((-2, -1)))
    return gn / (gn + a.shape[-2] * (m * m).sum((-2, -1)))


@pytest.mark.parametrize("debiased", [False, True])
def test_row_offsets_keep_float32_accuracy(rng, debiased):
    """Items whose rows share a large offset (the Gram centred after the product would lose digits)
    are recomputed from their centred data: every value stays within the centred formulation's
    float32 error of the float64 reference. The raw-Gram formulation alone fails this on the same
    data (the guard is needed), and is as accurate as the centred one where r >= RAW_MIN_RATIO."""
    clean, noisy = _offset_data(rng)
    want = _ref(clean, noisy, debiased)
    r = _ratio(noisy)
    assert r.min() < 0.01 and r.max() > 0.5  # both sides of the bound
    c32, n32 = jnp.asarray(clean, jnp.float32), jnp.asarray(noisy, jnp.float32)
    for cells in (1, 4, 15):
        out = np.asarray(_cka_items.item_cka(n32, c32, debiased_flags=(debiased,), cells=cells)[0][0])
        np.testing.assert_allclose(out, want, rtol=0, atol=3e-6)
    gy = _cka_items.unit_grams(c32, (debiased,), False)[0][0]
    raw = np.asarray(jnp.einsum("...ucd,ucd->...u", _cka_items.unit_grams_raw(n32, (debiased,), False)[0][0], gy))
    err = np.abs(raw - want)
    assert err[r < 0.001].max() > 1e-5  # unguarded, the cancellation shows
    assert err[r >= _cka_items.RAW_MIN_RATIO].max() < 3e-6


def test_guarded_values_do_not_depend_on_position(rng):
    """Bit-identical per item with steps that mix raw-Gram and recomputed items."""
    clean, noisy = _offset_data(rng)
    clean, noisy = jnp.asarray(clean, jnp.float32), jnp.asarray(noisy, jnp.float32)
    a = np.asarray(_cka_items.item_cka(noisy, clean, debiased_flags=(False, True), cells=4)[0])
    b = np.asarray(_cka_items.item_cka(noisy[1:], clean, debiased_flags=(False, True), cells=4)[0])
    c = np.asarray(_cka_items.item_cka(noisy[:, 3:], clean, debiased_flags=(False, True), cells=4)[0])
    np.testing.assert_array_equal(a[:, 1:], b)
    np.testing.assert_array_equal(a[:, :, 3:], c)


# ----------------------------------------------------------------------------- padded buckets
# The sweep pads the items of layers of different shapes to one bucket (one compiled program):
# zero features leave a linear Gram unchanged, padded samples are masked (item_cka's n_valid).

def test_buckets_merge_small_shapes_and_keep_large_ones_apart():
    # GTCRN's demo layers, 185 items each: the small Grams share one program, the 129- and
    # 257-sample layers (whose padding would cost more than a program) keep their own.
    shapes = [(9, 129)] + [(16, 65)] * 2 + [(16, 33)] * 9 + [(129, 2), (257, 2)]
    got = _cka_items.item_buckets(shapes, items=185)
    assert got == {(9, 129): (16, 129), (16, 65): (16, 129), (16, 33): (16, 129), (129, 2): (129, 2),
                   (257, 2): (257, 2)}
    # the same shapes at a full sweep's size (18 noises x 41 SNRs x 8 items): padding 9 layers
    # from 9 to 16 samples would cost more than a program, widening 33 features to 65 not
    big = _cka_items.item_buckets(shapes, items=18 * 41 * 8)
    assert big == {(9, 129): (9, 129), (16, 65): (16, 65), (16, 33): (16, 65), (129, 2): (129, 2),
                   (257, 2): (257, 2)}
    # MUSE's demo layers: 16 and 32 samples share a program; adding 48 would cost more
    muse = [(16, 128)] * 12 + [(32, 64)] * 8 + [(48, 32)] * 4
    assert _cka_items.item_buckets(muse, items=185) == {(16, 128): (32, 128), (32, 64): (32, 128), (48, 32): (48, 32)}
    assert _cka_items.item_buckets([(16, 33)] * 3, items=10) == {(16, 33): (16, 33)}
    assert _cka_items.item_buckets(shapes, items=185, budget=0) == {s: s for s in shapes}


@pytest.mark.parametrize("debiased", [False, True])
def test_padded_items_match_float64_reference(x64, rng, debiased):
    """Odd shapes (n = 9 samples, d = 33 features) padded to (16, 64): the reference values."""
    clean, noisy = _data(rng, S=2, K=3, U=3, n=9, d=33)
    want = _ref(clean, noisy, debiased)
    padded = [jnp.asarray(_cka_items.pad_items(a, 16, 64)) for a in (noisy, clean)]
    for cells in (1, 4, 6):
        out, rx, ry = _cka_items.item_cka(*padded, 9, debiased_flags=(debiased,), cells=cells)
        np.testing.assert_allclose(np.asarray(out[0]), want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.asarray(rx), _ratio(noisy), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(ry), _ratio(clean), rtol=1e-10)


@pytest.mark.parametrize("orientation", ["channels", "bins"])
def test_bucketed_sweep_path_equals_unpadded(rng, orientation):
    """per_item_cka_all with a bucket: the unpadded values to float32 rounding, and (rows as
    samples, the sweep's default) bit-equal when the bucket is the items' own shape (the
    masked program divides as XLA does)."""
    clean, noisy = _data(rng, S=3, K=4, U=3, n=9, d=33)
    clean, noisy = clean.astype(np.float32), noisy.astype(np.float32)
    want = per_item_cka_all(noisy, clean, orientation=orientation)
    own = (9, 33) if orientation == "channels" else (33, 9)
    same = per_item_cka_all(noisy, clean, orientation=orientation, bucket=own)
    padded = per_item_cka_all(noisy, clean, orientation=orientation, bucket=(48, 130))
    for est in ("biased", "debiased"):
        if orientation == "channels":
            np.testing.assert_array_equal(np.asarray(same[est]), np.asarray(want[est]))
        np.testing.assert_allclose(np.asarray(same[est]), np.asarray(want[est]), rtol=0, atol=2e-7)
        # padded to 48 samples, the items run on the native kernel (jaxprobe.native; the unpadded 33 stay on
        # XLA's program): two float32 paths, each within 2e-6 of float64 (tests/jaxprobe/test_native_cka.py)
        np.testing.assert_allclose(np.asarray(padded[est]), np.asarray(want[est]), rtol=0, atol=2e-6)


def test_padded_items_keep_the_offset_guard(rng):
    """Items whose rows share a large offset (recomputed from centred data) stay accurate padded."""
    clean, noisy = _offset_data(rng, n=9, d=40)
    for debiased in (False, True):
        want = _ref(clean, noisy, debiased)
        padded = [jnp.asarray(_cka_items.pad_items(a.astype(np.float32), 16, 64)) for a in (noisy, clean)]
        out = np.asarray(_cka_items.item_cka(*padded, 9, debiased_flags=(debiased,), cells=4)[0][0])
        np.testing.assert_allclose(out, want, rtol=0, atol=3e-6)


def test_padded_sweep_path_words_degenerate_input(rng):
    """Constant, NaN and huge items in a padded call: the same errors (argument and batch index)
    and the same rescued values as unpadded."""
    clean, noisy = _data(rng, S=2, K=3, U=4, n=9, d=33)
    clean, noisy = clean.astype(np.float32), noisy.astype(np.float32)
    bad = noisy.copy()
    bad[1, 2, 3] = 7.0
    with pytest.raises(ValueError, match=r"'noisy' parameter of per_item_cka_all is a constant representation "
                                         r"at batch index \(1, 2, 3\)"):
        per_item_cka_all(bad, clean, bucket=(16, 64))
    c2 = clean.copy()
    c2[2] = 0.0
    with pytest.raises(ValueError, match=r"'clean' parameter of per_item_cka_all is a constant representation "
                                         r"at batch index \(2,\)"):
        per_item_cka_all(noisy, c2, bucket=(16, 64))
    nan = noisy.copy()
    nan[0, 1, 2, 5, 7] = np.nan
    with pytest.raises(ValueError, match=r"'noisy' parameter of per_item_cka_all must be finite; .* index "
                                         r"\(0, 1, 2, 5, 7\)"):
        per_item_cka_all(nan, clean, bucket=(16, 64))
    huge = noisy * np.float32(1e25)  # Gram products overflow: the scaled (rescue) program
    got = per_item_cka_all(huge, clean, bucket=(16, 64))
    want = per_item_cka_all(noisy, clean)
    for est in ("biased", "debiased"):
        np.testing.assert_allclose(np.asarray(got[est]), np.asarray(want[est]), rtol=0, atol=2e-6)
