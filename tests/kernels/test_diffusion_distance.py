"""kernels.diffusion_distance (closed-form t = 1/2 distances) against a float64 numpy
eigendecomposition (tests/reference/diffusion_ref.py)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe_kernels.diffusion_distance import group_sq_distances, total_energy
from tests.reference import diffusion_ref as ref


def _cloud(rng, n=120, d=6):
    t = np.linspace(0, 3, n)
    return np.c_[np.cos(t), np.sin(2 * t), t][:, :3] @ rng.normal(size=(3, d)) + 0.05 * rng.normal(size=(n, d))


def _inputs(X, alpha):
    D2 = ref.sq_distance_matrix(X)
    eps = ref.median_epsilon(D2)
    K = np.exp(-D2 / (2.0 * eps))
    return eps, K, K.sum(axis=1) ** (-alpha)


def _groups(n, G):
    labels = np.arange(n) % G
    M = np.zeros((G, n))
    M[labels, np.arange(n)] = 1.0
    return M / M.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_group_distances_equal_all_component_eigendecomposition_float64(x64, rng, alpha):
    X = _cloud(rng)
    eps, K, qa = _inputs(X, alpha)
    w, psi, coords, pi, P = ref.diffusion_map(X, eps, alpha=alpha, t=0.5)
    M = _groups(X.shape[0], 7)
    C = M @ coords
    want = ((C[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    got = np.asarray(group_sq_distances(jnp.asarray(K), jnp.asarray(qa), jnp.asarray(M)))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10 * want.max())
    # pairwise (M = I), against the same coordinates
    want_p = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    got_p = np.asarray(group_sq_distances(jnp.asarray(K), jnp.asarray(qa), jnp.eye(X.shape[0])))
    np.testing.assert_allclose(got_p, want_p, rtol=1e-8, atol=1e-9 * want_p.max())
    np.testing.assert_allclose(float(total_energy(jnp.asarray(K), jnp.asarray(qa))), w.sum(), rtol=1e-10)


def test_energy_rule_changes_weighted_mean_distance_by_the_dropped_share(x64, rng):
    """At t = 1/2 the pi-weighted mean squared distance is 2 sum(lambda); truncation at the
    99 % rule removes exactly the dropped share (<= 1 %), and each pair's loss obeys the bound
    lambda_{m+1} (1/pi_i + 1/pi_j)."""
    X = _cloud(rng, n=150)
    eps, K, qa = _inputs(X, 0.0)
    w, psi, coords, pi, P = ref.diffusion_map(X, eps, t=0.5)
    full = np.asarray(group_sq_distances(jnp.asarray(K), jnp.asarray(qa), jnp.eye(X.shape[0])))
    np.testing.assert_allclose(pi @ full @ pi, 2 * w.sum(), rtol=1e-9)
    m = int(np.sum(np.cumsum(w) / w.sum() < 0.99)) + 1
    assert 1 < m < len(w)  # the rule drops a tail on this cloud, so the check can fail
    c = coords[:, :m]
    trunc = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    lost = full - trunc
    assert (pi @ lost @ pi) / (pi @ full @ pi) <= 0.01 + 1e-12
    np.testing.assert_allclose((pi @ lost @ pi) / (pi @ full @ pi), w[m:].sum() / w.sum(), rtol=1e-8)
    bound = w[m] * (1 / pi[:, None] + 1 / pi[None, :])
    assert np.all(lost <= bound * (1 + 1e-9) + 1e-12)


def test_float32_error_against_float64(rng):
    """The float32 kernel on float32 affinities: relative error of the group distances
    vs the float64 reference below 1e-4 of the largest distance."""
    X = _cloud(rng, n=300, d=20)
    eps, K, qa = _inputs(X, 0.0)
    M = _groups(X.shape[0], 10)
    w, psi, coords, pi, P = ref.diffusion_map(X, eps, t=0.5)
    C = M @ coords
    want = ((C[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    got = np.asarray(group_sq_distances(jnp.asarray(K, jnp.float32), jnp.asarray(qa, jnp.float32),
                                        jnp.asarray(M, jnp.float32)))
    assert np.max(np.abs(got - want)) < 1e-4 * want.max()


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_t1_group_distances_equal_eigendecomposition_float64(x64, rng, alpha):
    from jaxprobe_kernels.diffusion_distance import group_sq_distances_t1

    X = _cloud(rng, n=90)
    eps, K, qa = _inputs(X, alpha)
    w, psi, coords, pi, P = ref.diffusion_map(X, eps, alpha=alpha, t=1.0)
    M = _groups(X.shape[0], 6)
    C = M @ coords
    want = ((C[:, None, :] - C[None, :, :]) ** 2).sum(-1)
    got = np.asarray(group_sq_distances_t1(jnp.asarray(K), jnp.asarray(qa), jnp.asarray(M)))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * want.max())
    # and t = 1 point distances against the definition through P (||P_i - P_j||_{1/pi})
    Dp = ref.diffusion_distance_from_P(P, pi, 1)
    gotp = np.asarray(group_sq_distances_t1(jnp.asarray(K), jnp.asarray(qa), jnp.eye(X.shape[0])))
    np.testing.assert_allclose(gotp, Dp ** 2 / 1.0, rtol=1e-7, atol=1e-10 * Dp.max() ** 2)
