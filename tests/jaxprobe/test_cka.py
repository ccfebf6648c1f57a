import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

import jaxprobe
import importlib

cka_mod = importlib.import_module("jaxprobe._cka")
from tests.reference import cka_ref as ref


# --- published values -------------------------------------------------------------

@pytest.mark.usefixtures("x64")
def test_kornblith_demo_values():
    """Kornblith et al.'s demonstration: linear 0.55761, debiased 0.51346, RBF (t=0.5) 0.65483."""
    X, Y = ref.kornblith_demo_data()
    assert float(jaxprobe.cka(X, Y)) == pytest.approx(0.55761, abs=5e-6)
    assert float(jaxprobe.cka(X, Y, debiased=True)) == pytest.approx(0.51346, abs=5e-6)
    rbf = jaxprobe.cka(X, Y, kernel="rbf", sigma=("kornblith", 0.5))
    assert float(rbf) == pytest.approx(0.65483, abs=5e-6)


def test_kornblith_demo_values_float32():
    X, Y = ref.kornblith_demo_data()
    X, Y = X.astype(np.float32), Y.astype(np.float32)
    got = jaxprobe.cka(X, Y)
    assert got.dtype == jnp.float32
    assert float(got) == pytest.approx(0.55761, abs=2e-5)
    assert float(jaxprobe.cka(X, Y, debiased=True)) == pytest.approx(0.51346, abs=2e-5)


# --- against the float64 reference ---------------------------------------------------

@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("shape", [(30, 5, 7), (12, 40, 25)])  # feature path and Gram path
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_matches_reference_both_paths(rng, shape, debiased):
    n, d1, d2 = shape
    X = rng.standard_normal((n, d1))
    Y = X[:, :1] * rng.standard_normal((1, d2)) + rng.standard_normal((n, d2))
    expect = ref.cka(ref.linear_gram(X), ref.linear_gram(Y), debiased)
    np.testing.assert_allclose(jaxprobe.cka(X, Y, debiased=debiased), expect, rtol=1e-10)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_matches_reference(rng, debiased):
    X = rng.standard_normal((20, 4))
    Y = np.tanh(X) + 0.3 * rng.standard_normal((20, 4))
    sx = np.sqrt(ref.median_sq_distance(X))
    sy = np.sqrt(ref.median_sq_distance(Y))
    expect = ref.cka(ref.rbf_gram(X, sx), ref.rbf_gram(Y, sy), debiased)
    np.testing.assert_allclose(jaxprobe.cka(X, Y, kernel="rbf", debiased=debiased), expect, rtol=1e-9)
    expect2 = ref.cka(ref.rbf_gram(X, 2.0), ref.rbf_gram(Y, 2.0), debiased)
    np.testing.assert_allclose(jaxprobe.cka(X, Y, kernel="rbf", sigma=2.0, debiased=debiased), expect2, rtol=1e-9)


# --- properties ----------------------------------------------------------------------

_dims = st.tuples(st.integers(6, 24), st.integers(2, 12), st.integers(2, 12), st.integers(0, 2**31 - 1))


@settings(max_examples=15, deadline=None)
@given(_dims)
def test_invariances(dims):
    n, d1, d2, seed = dims
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d1))
    Y = X @ rng.standard_normal((d1, d2)) + rng.standard_normal((n, d2))
    base = float(jaxprobe.cka(X, Y))
    Q = ortho_group.rvs(d1, random_state=seed) if d1 > 1 else np.ones((1, 1))
    assert float(jaxprobe.cka(X @ Q * 3.7 + 5.0, Y)) == pytest.approx(base, abs=2e-5)
    assert float(jaxprobe.cka(Y, X)) == pytest.approx(base, abs=2e-5)  # symmetric
    assert float(jaxprobe.cka(X, X)) == pytest.approx(1.0, abs=2e-5)
    assert -1e-6 <= base <= 1 + 1e-6


def test_not_invariant_to_general_invertible_maps(rng):
    X = rng.standard_normal((50, 4))
    Y = X + 0.5 * rng.standard_normal((50, 4))
    A = np.diag([1.0, 10.0, 0.1, 3.0]) @ ortho_group.rvs(4, random_state=3)
    assert abs(float(jaxprobe.cka(X @ A, Y)) - float(jaxprobe.cka(X, Y))) > 1e-2


def test_debiased_near_zero_for_independent_wide_representations(rng):
    X = rng.standard_normal((32, 2048)).astype(np.float32)
    Y = rng.standard_normal((32, 2048)).astype(np.float32)
    biased = float(jaxprobe.cka(X, Y))
    debiased = float(jaxprobe.cka(X, Y, debiased=True))
    assert biased > 0.8  # biased CKA is dominated by n << d
    assert abs(debiased) < 0.05


# --- batching ----------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("debiased", [False, True])
def test_batch_consistency(rng, batch, debiased):
    X = rng.standard_normal((batch, 16, 40)).astype(np.float32)
    Y = rng.standard_normal((batch, 16, 24)).astype(np.float32) + X[..., :24]
    got = jaxprobe.cka(X, Y, debiased=debiased)
    assert got.shape == (batch,)
    for i in range(batch):
        np.testing.assert_allclose(got[i], jaxprobe.cka(X[i], Y[i], debiased=debiased), rtol=1e-6)


def test_broadcast_reuses_clean_representation(rng):
    clean = rng.standard_normal((5, 16, 32)).astype(np.float32)  # (utterances, C, F)
    noisy = clean[None, None] + rng.standard_normal((3, 2, 5, 16, 32)).astype(np.float32)
    got = jaxprobe.cka(noisy, clean)
    assert got.shape == (3, 2, 5)
    np.testing.assert_allclose(got[2, 1, 4], jaxprobe.cka(noisy[2, 1, 4], clean[4]), rtol=1e-6)


def test_no_recompilation_on_second_call(rng):
    X = rng.standard_normal((4, 16, 20)).astype(np.float32)
    Y = rng.standard_normal((4, 16, 20)).astype(np.float32)
    jaxprobe.cka(X, Y)
    before = cka_mod._linear_cka_batched._cache_size()
    jaxprobe.cka(X + 1, Y * 2)
    assert cka_mod._linear_cka_batched._cache_size() == before


@pytest.mark.usefixtures("x64")
def test_cka_matrix_matches_pairwise(rng):
    n = 20
    Xs = [rng.standard_normal((n, d)) for d in (8, 30, 50)]
    Ys = [x[:, :5] @ rng.standard_normal((5, 12)) + rng.standard_normal((n, 12)) for x in Xs[:2]]
    M = jaxprobe.cka_matrix(Xs, Ys)
    assert M.shape == (3, 2)
    for i, x in enumerate(Xs):
        for j, y in enumerate(Ys):
            np.testing.assert_allclose(M[i, j], ref.cka(ref.linear_gram(x), ref.linear_gram(y)), rtol=1e-10)
    Md = jaxprobe.cka_matrix(Xs, debiased=True)
    np.testing.assert_allclose(Md[0, 2], ref.cka(ref.linear_gram(Xs[0]), ref.linear_gram(Xs[2]), True), rtol=1e-9)
    np.testing.assert_allclose(np.diag(Md), 1.0, rtol=1e-12)


@pytest.mark.usefixtures("x64")
def test_float64_kept():
    X, Y = ref.kornblith_demo_data()
    assert jaxprobe.cka(X, Y).dtype == jnp.float64


# --- bad input ----------------------------------------------------------------------

@pytest.mark.parametrize(
    "X, Y, kw, match",
    [
        (np.ones((10, 3)) * np.arange(3), np.random.rand(10, 3), {}, "constant representation"),
        (np.random.rand(10, 3), np.random.rand(9, 3), {}, "same number of samples"),
        (np.random.rand(3, 3), np.random.rand(3, 3), {"debiased": True}, "n >= 4"),
        (np.random.rand(10), np.random.rand(10, 2), {}, "at least 2 dimensions"),
        (np.where(np.eye(10, 3) > 0, np.nan, 1.0), np.random.rand(10, 3), {}, "must be finite"),
        (np.random.rand(10, 3), np.random.rand(10, 3), {"kernel": "poly"}, "must be one of"),
        (np.random.rand(10, 3), np.random.rand(10, 3), {"kernel": "rbf", "sigma": -1.0}, "> 0"),
        (np.random.rand(10, 3), np.random.rand(10, 3), {"sigma": 1.0}, "kernel='rbf' only"),
    ],
)
def test_bad_input_is_named(X, Y, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        jaxprobe.cka(X, Y, **kw)


def test_constant_item_in_batch_is_located(rng):
    X = rng.standard_normal((3, 10, 4))
    X[1] = 2.0
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        jaxprobe.cka(X, rng.standard_normal((3, 10, 4)))
