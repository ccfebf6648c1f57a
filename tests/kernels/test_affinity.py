"""kernels.affinity against the plain float64 reference and numpy."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxprobe_kernels.affinity import (
    BGH_LOG2_GRID,
    affinity_matvec,
    cross_affinity,
    dense_affinity,
    epsilon_bgh,
    epsilon_median,
    gaussian_affinity,
    symmetric_sq_distances,
)
from jaxprobe_kernels.gram import sq_distances
from tests.reference import diffusion_ref as ref


def test_kernel_convention_is_two_epsilon():
    # exp(-d^2 / (2 eps)): a squared distance of 2 eps gives exp(-1)
    K = gaussian_affinity(jnp.array([[0.0, 6.0]]), 3.0)
    np.testing.assert_allclose(np.asarray(K), [[1.0, np.exp(-1.0)]], rtol=1e-6)


@pytest.mark.parametrize("n", [3, 4, 7, 10])
def test_median_matches_numpy_float64(x64, rng, n):
    X = rng.normal(size=(n, 4))
    D2 = ref.sq_distance_matrix(X)
    assert float(epsilon_median(jnp.asarray(D2))) == ref.median_epsilon(D2)


def test_median_bisection_ends_with_nans_of_both_signs():
    """NaN distances (from non-finite data, which the maps then name) may carry either sign bit;
    the bisection's midpoint overflowed between a negative and a positive bit pattern and the loop
    never ended. The value is that of the native selection (tests/jaxprobe/test_native_median.py)."""
    D = np.random.default_rng(2).standard_normal((9, 9)).astype(np.float32)
    D[0, 3], D[2, 5], D[1, 8] = np.nan, -np.nan, np.inf
    assert np.float32(-np.nan).view(np.int32) < 0  # the sign bit this test is about
    assert np.isfinite(float(jax.jit(epsilon_median)(D)))


@pytest.mark.parametrize("n", [5, 6, 33])
def test_median_matches_numpy_float32_and_keeps_dtype(rng, n):
    D2 = np.asarray(sq_distances(jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)))
    med = epsilon_median(jnp.asarray(D2))
    assert med.dtype == jnp.float32
    iu = np.triu_indices(n, 1)
    # the two middle values are float32 numbers; their mean is rounded once, as numpy does
    assert float(med) == float(np.median(D2[iu]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=3 * 2, max_size=12 * 2))
def test_median_with_ties_matches_numpy(vals):
    # integer coordinates on a small grid: many tied distances, duplicate points allowed
    X = np.asarray(vals[: len(vals) // 2 * 2], dtype=np.float32).reshape(-1, 2)
    D2 = np.asarray(sq_distances(jnp.asarray(X)))
    iu = np.triu_indices(X.shape[0], 1)
    assert float(epsilon_median(jnp.asarray(D2))) == float(np.median(D2[iu]))


def test_bgh_matches_reference(x64, rng):
    X = rng.normal(size=(40, 2))
    D2 = ref.sq_distance_matrix(X)
    eps, dim = epsilon_bgh(jnp.asarray(D2))
    eps_ref, dim_ref = ref.bgh_epsilon(D2, BGH_LOG2_GRID)
    np.testing.assert_allclose(float(eps), eps_ref, rtol=1e-12)
    np.testing.assert_allclose(float(dim), dim_ref, rtol=1e-10)


def test_bgh_dimension_estimate_on_a_plane(x64, rng):
    # a densely sampled 2-D square in 10-D: the BGH slope estimates dimension ~ 2
    Z = rng.uniform(size=(400, 2))
    X = Z @ rng.normal(size=(2, 10))
    _, dim = epsilon_bgh(sq_distances(jnp.asarray(X)))
    assert 1.5 < float(dim) < 2.6


def test_bgh_is_scale_free(x64, rng):
    X = rng.normal(size=(30, 3))
    e1, _ = epsilon_bgh(sq_distances(jnp.asarray(X)))
    e2, _ = epsilon_bgh(sq_distances(jnp.asarray(7.0 * X)))
    np.testing.assert_allclose(float(e2), 49.0 * float(e1), rtol=1e-10)


def test_dense_and_cross_affinity_match_reference(x64, rng):
    X, Y = rng.normal(size=(12, 5)), rng.normal(size=(4, 5))
    K = np.exp(-ref.sq_distance_matrix(X) / (2 * 1.7))
    np.testing.assert_allclose(np.asarray(dense_affinity(jnp.asarray(X), 1.7)), K, rtol=1e-13, atol=1e-14)
    Kxy = np.exp(-((Y[:, None, :] - X[None]) ** 2).sum(-1) / (2 * 1.7))
    np.testing.assert_allclose(np.asarray(cross_affinity(jnp.asarray(Y), jnp.asarray(X), 1.7)), Kxy, rtol=1e-12)


@pytest.mark.parametrize("block_size", [1, 7, 16, 50, 4096])
def test_blocked_matvec_equals_dense_product(x64, rng, block_size):
    X, V = rng.normal(size=(50, 6)), rng.normal(size=(50, 3))
    K = np.exp(-ref.sq_distance_matrix(X) / (2 * 2.5))
    out = affinity_matvec(jnp.asarray(X), jnp.asarray(V), 2.5, block_size=block_size)
    np.testing.assert_allclose(np.asarray(out), K @ V, rtol=1e-12, atol=1e-12)


def test_blocked_matvec_float32_keeps_dtype(rng):
    X = jnp.asarray(rng.normal(size=(37, 4)), jnp.float32)
    V = jnp.asarray(rng.normal(size=(37, 2)), jnp.float32)
    out = affinity_matvec(X, V, 3.0, block_size=8)
    assert out.dtype == jnp.float32
    dense = np.asarray(dense_affinity(X, 3.0)) @ np.asarray(V)
    np.testing.assert_allclose(np.asarray(out), dense, rtol=2e-5, atol=2e-5)


def test_blocked_matvec_compiles_once(rng):
    X = jnp.asarray(rng.normal(size=(20, 3)), jnp.float32)
    V = jnp.ones((20, 2), jnp.float32)
    affinity_matvec(X, V, 1.0, block_size=8)
    before = affinity_matvec._cache_size()
    affinity_matvec(X + 1.0, V, 2.0, block_size=8)
    assert affinity_matvec._cache_size() == before


def test_median_under_vmap(rng):
    D2 = jax.vmap(sq_distances)(jnp.asarray(rng.normal(size=(3, 9, 2)), jnp.float32))
    meds = jax.vmap(epsilon_median)(D2)
    iu = np.triu_indices(9, 1)
    np.testing.assert_array_equal(np.asarray(meds), [np.median(np.asarray(d)[iu]) for d in D2])


@pytest.mark.parametrize("n", [2, 3, 4, 5, 17, 738, 2048])
def test_triu_pairs_match_numpy(n):
    from jaxprobe_kernels.affinity import _triu_pairs

    i, j = _triu_pairs(n)
    iu, ju = np.triu_indices(n, 1)
    np.testing.assert_array_equal(np.asarray(i), iu)
    np.testing.assert_array_equal(np.asarray(j), ju)


@pytest.mark.parametrize("n, n_blocks", [(3, None), (7, 1), (7, 2), (7, 7), (40, 3), (101, 4), (800, None)])
def test_symmetric_sq_distances_match_the_full_gram(rng, n, n_blocks):
    X = (rng.normal(size=(n, 5)) + 3.0).astype(np.float32)  # an offset: centering matters
    D2 = np.asarray(symmetric_sq_distances(jnp.asarray(X), n_blocks=n_blocks))
    assert D2.dtype == np.float32
    np.testing.assert_array_equal(D2, D2.T)  # bit for bit
    assert (np.diag(D2) == 0).all() and (D2 >= 0).all()
    ref = ((X[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(D2, ref, rtol=1e-5, atol=1e-5 * ref.max())
    full = np.asarray(sq_distances(jnp.asarray(X)))
    np.testing.assert_allclose(D2, full, rtol=1e-5, atol=1e-5 * ref.max())


def test_symmetric_sq_distances_float64(x64, rng):
    X = rng.normal(size=(30, 4))
    D2 = np.asarray(symmetric_sq_distances(jnp.asarray(X), n_blocks=3))
    np.testing.assert_allclose(D2, ref.sq_distance_matrix(X), rtol=1e-12, atol=1e-12)


# pair counts odd and even, some not multiples of 128; n = 1100 (even count) and 1103 (odd) take the flat-sum path
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 17, 18, 24, 130, 1100, 1103])
@pytest.mark.parametrize("ties", [False, True])
def test_median_selection_equals_sort_median(rng, n, ties):
    # any matrix (only the upper triangle counts): continuous values, or few distinct
    # values with many ties and zeros; the selection must equal numpy's sort-based median
    for _ in range(5):
        if ties:
            D2 = rng.integers(0, 4, size=(n, n)).astype(np.float32) * np.float32(0.7)
        else:
            D2 = (rng.exponential(size=(n, n)) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        iu = np.triu_indices(n, 1)
        expect = np.median(D2[iu])
        got = epsilon_median(jnp.asarray(D2))
        assert got.dtype == jnp.float32
        assert float(got) == float(expect), (n, ties)


def test_median_selection_float64_and_extremes(x64, rng):
    for n in (5, 8, 64):
        D2 = rng.exponential(size=(n, n)) * 1e300  # bit patterns near the top of the range
        D2[0, 1] = 0.0
        iu = np.triu_indices(n, 1)
        assert float(epsilon_median(jnp.asarray(D2))) == float(np.median(D2[iu]))
    D2 = np.full((6, 6), 2.5)  # all equal: the bracket starts closed
    assert float(epsilon_median(jnp.asarray(D2))) == 2.5
