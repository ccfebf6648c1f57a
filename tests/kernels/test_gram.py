import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe_kernels import gram
from tests.reference import cka_ref as ref

TOL64 = 1e-10


@pytest.mark.usefixtures("x64")
def test_linear_and_rbf_gram_match_reference(rng):
    X = rng.standard_normal((13, 7))
    np.testing.assert_allclose(gram.linear_gram(X), ref.linear_gram(X), rtol=TOL64, atol=TOL64)
    np.testing.assert_allclose(gram.sq_distances(X), ref.sq_dists(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gram.rbf_gram(X, 2.5), ref.rbf_gram(X, 2.5), rtol=1e-9, atol=1e-12)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("n", [6, 7])  # n(n-1)/2 = 15 (odd) and 21; n^2 = 36 (even) and 49
@pytest.mark.parametrize("include_diagonal", [False, True])
def test_median_rule_diagonal_and_even_counts(rng, n, include_diagonal):
    X = rng.standard_normal((n, 3))
    got = gram.median_sq_distance(gram.sq_distances(X), include_diagonal=include_diagonal)
    np.testing.assert_allclose(got, ref.median_sq_distance(X, include_diagonal), rtol=1e-9)


@pytest.mark.usefixtures("x64")
def test_even_count_median_is_mean_of_middle_values():
    # 5 points -> 10 distinct pairs (even count)
    X = np.array([[0.0], [1.0], [3.0], [7.0], [15.0]])
    d = sorted((a - b) ** 2 for i, a in enumerate(X[:, 0]) for b in X[i + 1 :, 0])
    expect = (d[4] + d[5]) / 2
    assert float(gram.median_sq_distance(gram.sq_distances(X))) == pytest.approx(expect, rel=1e-12)


@pytest.mark.usefixtures("x64")
def test_rbf_grid_matches_single_bandwidths(rng):
    X = rng.standard_normal((9, 4))
    sig = jnp.array([0.5, 1.0, 3.0])
    grid = gram.rbf_gram_grid(X, sig)
    for s, K in zip(sig, grid):
        np.testing.assert_allclose(K, ref.rbf_gram(X, float(s)), rtol=1e-9, atol=1e-12)


@pytest.mark.usefixtures("x64")
def test_centering_matches_explicit_H(rng):
    K = ref.linear_gram(rng.standard_normal((8, 5)))
    H = ref.centering_matrix(8)
    np.testing.assert_allclose(gram.center_gram(K), H @ K @ H, rtol=TOL64, atol=TOL64)
    X = rng.standard_normal((8, 5))
    np.testing.assert_allclose(gram.center_columns(X), H @ X, rtol=TOL64, atol=TOL64)


@pytest.mark.usefixtures("x64")
def test_unbiased_centering_inner_product_is_unbiased_hsic(rng):
    n = 11
    K = ref.rbf_gram(rng.standard_normal((n, 3)), 1.3)
    L = ref.linear_gram(rng.standard_normal((n, 6)))
    UK, UL = gram.center_gram_unbiased(K), gram.center_gram_unbiased(L)
    got = float(jnp.sum(UK * UL)) / (n * (n - 3))
    np.testing.assert_allclose(got, ref.hsic_unbiased(K, L), rtol=1e-10)


def test_float32_kept(rng):
    X = rng.standard_normal((10, 4)).astype(np.float32)
    assert gram.linear_gram(X).dtype == jnp.float32
    assert gram.rbf_gram(X, 1.0).dtype == jnp.float32
