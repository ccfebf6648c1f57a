"""jaxprobe.diffusion against the plain float64 reference, analytic cases, and its contracts."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxprobe import diffusion as dm_mod
from jaxprobe.diffusion import diffusion_distances, diffusion_map, diffusion_nystrom
from jaxprobe_kernels.affinity import BGH_LOG2_GRID
from tests.reference import diffusion_ref as ref


def _curve(n, d, rng, noise=0.0):
    """A gently bent 1-D curve (arc length ~ s) embedded in d dimensions."""
    s = np.linspace(0.0, 1.0, n)
    base = np.stack([s, 0.3 * np.sin(2.0 * s), 0.2 * s**2], axis=1)
    Q, _ = np.linalg.qr(rng.normal(size=(d, 3)))
    return base @ Q.T + noise * rng.normal(size=(n, d)), s


def _max_angle(A, B):
    return float(np.max(scipy.linalg.subspace_angles(np.asarray(A), np.asarray(B))))


# ----------------------------------------------------------------------------- reference


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("epsilon", ["median", "bgh", 0.8])
def test_eigenvalues_match_reference_float64(x64, rng, alpha, epsilon):
    X = rng.normal(size=(40, 3))
    res = diffusion_map(X, alpha=alpha, epsilon=epsilon, t=1.0)
    D2 = ref.sq_distance_matrix(X)
    eps = {"median": ref.median_epsilon(D2), "bgh": ref.bgh_epsilon(D2, BGH_LOG2_GRID)[0]}.get(epsilon, epsilon)
    np.testing.assert_allclose(float(res.epsilon), eps, rtol=1e-12)
    w, psi, _, pi, P = ref.diffusion_map(X, eps, alpha)
    assert res.eigenvalues.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(res.eigenvalues), w, rtol=0, atol=1e-8)
    np.testing.assert_allclose(np.asarray(res.stationary), pi, rtol=1e-10)
    # right eigenvectors of the reference Markov matrix: residual, never coordinates
    psi_j = np.asarray(res.eigenvectors)
    resid = np.linalg.norm(P @ psi_j - psi_j * w[None, :], axis=0)
    assert resid.max() < 1e-8
    # pi-orthonormal, pi-orthogonal to the constant
    G = psi_j.T @ (pi[:, None] * psi_j)
    np.testing.assert_allclose(G, np.eye(len(w)), atol=1e-8)
    # leading, well-separated subspace equals the reference one
    assert _max_angle(psi_j[:, :3], psi[:, :3]) < 1e-6


@pytest.mark.parametrize("t", [1, 2, 3])
def test_all_components_give_the_diffusion_distance(x64, rng, t):
    X = rng.normal(size=(25, 4))
    res = diffusion_map(X, t=float(t), alpha=0.5)
    eps = ref.median_epsilon(ref.sq_distance_matrix(X))
    _, _, _, pi, P = ref.diffusion_map(X, eps, 0.5)
    D_ref = ref.diffusion_distance_from_P(P, pi, t)
    D = np.asarray(diffusion_distances(res.coords))
    np.testing.assert_allclose(D**2, D_ref**2, atol=1e-12)
    np.testing.assert_allclose(np.diag(D), 0.0)


def test_float32_keeps_dtype_and_is_close(rng):
    X = rng.normal(size=(40, 3)).astype(np.float32)
    res = diffusion_map(X)
    for f in (res.coords, res.eigenvalues, res.eigenvectors, res.epsilon):
        assert f.dtype == jnp.float32
    w, *_ = ref.diffusion_map(X, ref.median_epsilon(ref.sq_distance_matrix(X)))
    np.testing.assert_allclose(np.asarray(res.eigenvalues), w, atol=2e-6)


def test_t_zero_gives_eigenvectors(x64, rng):
    res = diffusion_map(rng.normal(size=(12, 2)), t=0.0)
    np.testing.assert_allclose(np.asarray(res.coords), np.asarray(res.eigenvectors))


# ----------------------------------------------------------------------------- analytic cases


def test_curve_dc1_is_monotone_in_arc_length(x64, rng):
    X, s = _curve(120, 50, rng)
    res = diffusion_map(X, n_components=3, align_to=s)
    rho = scipy.stats.spearmanr(np.asarray(res.coords[:, 0]), s).statistic
    assert rho == 1.0
    # flipping the reference flips DC1
    res2 = diffusion_map(X, n_components=3, align_to=-s)
    assert scipy.stats.spearmanr(np.asarray(res2.coords[:, 0]), s).statistic == -1.0


def test_two_clusters_are_split_by_dc1(rng):
    A = rng.normal(size=(30, 20))
    B = rng.normal(size=(30, 20)) + 8.0
    res = diffusion_map(np.concatenate([A, B]), n_components=2)
    dc1 = np.asarray(res.coords[:, 0])
    assert (np.sign(dc1[:30]) == np.sign(dc1[0])).all()
    assert (np.sign(dc1[30:]) == -np.sign(dc1[0])).all()
    assert float(res.eigenvalues[0]) > 10 * float(res.eigenvalues[1])


def test_circle_gives_eigenvalue_pairs_and_traces_the_circle(x64, rng):
    n = 90
    th = 2 * np.pi * np.arange(n) / n
    Q, _ = np.linalg.qr(rng.normal(size=(10, 2)))
    X = np.stack([np.cos(th), np.sin(th)], 1) @ Q.T
    res = diffusion_map(X, n_components=6)
    w = np.asarray(res.eigenvalues)
    np.testing.assert_allclose(w[0::2], w[1::2], rtol=1e-9)
    assert w[1] > w[2] * (1 + 1e-3)
    c = np.asarray(res.coords[:, :2])
    r = np.linalg.norm(c, axis=1)
    np.testing.assert_allclose(r, r.mean(), rtol=1e-8)
    # the angle of (DC1, DC2) advances by 2 pi / n per point, in one direction
    step = np.diff(np.unwrap(np.arctan2(c[:, 1], c[:, 0])))
    np.testing.assert_allclose(np.abs(step), 2 * np.pi / n, rtol=1e-6)
    assert (np.sign(step) == np.sign(step[0])).all()


# the x64 fixture only flips a global flag, so sharing it across examples is safe
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-50, 50), alpha=st.sampled_from([0.0, 0.5, 1.0]))
def test_rotation_and_translation_invariance(x64, seed, shift, alpha):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(20, 5))
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = diffusion_map(X, alpha=alpha, align_to=np.arange(20.0))
    b = diffusion_map(X @ Q + shift, alpha=alpha, align_to=np.arange(20.0))
    np.testing.assert_allclose(np.asarray(a.eigenvalues), np.asarray(b.eigenvalues), atol=1e-10)
    Da, Db = diffusion_distances(a.coords), diffusion_distances(b.coords)
    np.testing.assert_allclose(np.asarray(Da), np.asarray(Db), atol=1e-7)


# ----------------------------------------------------------------------------- signs, energy


def test_default_sign_convention_largest_entry_positive(rng):
    res = diffusion_map(rng.normal(size=(30, 3)), n_components=5)
    psi = np.asarray(res.eigenvectors)
    top = np.argmax(np.abs(psi), axis=0)
    assert (psi[top, np.arange(5)] > 0).all()


def test_align_to_gives_nonnegative_weighted_correlation(rng):
    X = rng.normal(size=(30, 3))
    a = rng.normal(size=30)
    res = diffusion_map(X, n_components=5, align_to=a)
    c = np.sum(np.asarray(res.stationary)[:, None] * np.asarray(res.eigenvectors) * a[:, None], axis=0)
    assert (c >= 0).all()


def test_energy_keeps_the_reference_count_and_zeroes_the_rest(x64, rng):
    X = np.stack([rng.normal(size=(30, 3)), 3 * rng.normal(size=(30, 3))])
    res = diffusion_map(X, energy=0.9)
    for i in range(2):
        eps = ref.median_epsilon(ref.sq_distance_matrix(X[i]))
        w = np.clip(ref.diffusion_map(X[i], eps)[0], 0, None)
        k_ref = int(np.searchsorted(np.cumsum(w) / w.sum(), 0.9) + 1)
        assert int(res.n_kept[i]) == k_ref
        assert np.asarray(res.mask[i]).sum() == k_ref
        assert np.all(np.asarray(res.coords[i, :, k_ref:]) == 0)
        assert np.all(np.abs(np.asarray(res.coords[i, :, :k_ref])).max(axis=0) > 0)


# ----------------------------------------------------------------------------- top-k path


@pytest.mark.parametrize("solver", ["lobpcg", "krylov"])
@pytest.mark.parametrize("block_size", [None, 64])
def test_top_k_matches_dense(x64, rng, block_size, solver):
    X, _ = _curve(100, 8, rng, noise=0.02)
    X = np.concatenate([X, X[:, ::-1] + 1.0])  # two bent curves: a structured spectrum
    dense = diffusion_map(X, n_components=5, solver="eigh")
    top = diffusion_map(X, n_components=5, solver=solver, block_size=block_size, key=jax.random.key(3))
    assert top.solver == solver
    np.testing.assert_allclose(np.asarray(top.eigenvalues), np.asarray(dense.eigenvalues), atol=1e-8)
    assert _max_angle(top.eigenvectors, dense.eigenvectors) < 1e-5
    assert float(np.max(np.asarray(top.residuals))) < 1e-7


@pytest.mark.slow
def test_tiled_path_float32_large_cloud(rng):
    X = rng.normal(size=(5000, 16)).astype(np.float32)
    res = diffusion_map(X, n_components=4, block_size=1024, key=jax.random.key(0))
    assert res.coords.shape == (5000, 4) and res.solver == "krylov"  # "auto" on one device
    assert np.isfinite(np.asarray(res.coords)).all()
    assert float(np.max(np.asarray(res.residuals))) < 1e-3


def test_auto_picks_krylov_for_dense_top_k(rng):
    X = rng.normal(size=(300, 5)).astype(np.float32)
    assert diffusion_map(X, n_components=10).solver == "krylov"
    assert diffusion_map(X[:40], n_components=5).solver == "eigh"
    assert diffusion_map(X[:290], n_components=57).solver == "lobpcg"  # 5 (k + 2) >= n: no room for the basis


def test_auto_picks_lobpcg_in_float64(x64, rng):
    assert diffusion_map(rng.normal(size=(300, 5)), n_components=10).solver == "lobpcg"


@pytest.mark.parametrize("data", ["gauss", "circle"])
def test_krylov_falls_back_to_lobpcg_when_unconverged(rng, data):
    """A flat spectrum (Gaussian blob in 50-D) and exact eigenvalue pairs (a circle) are
    beyond a 5-block Krylov basis in float32; the restarted basis (from the Ritz vectors) and,
    where that too fails the test, the LOBPCG refinement must deliver the same eigenpairs as the
    dense solve."""
    if data == "gauss":
        X = rng.normal(size=(300, 50)).astype(np.float32)
    else:
        a = np.linspace(0.0, 2.0 * np.pi, 300, endpoint=False)
        X = np.c_[np.cos(a), np.sin(a)].astype(np.float32)
    dense = diffusion_map(X, n_components=8, solver="eigh")
    top = diffusion_map(X, n_components=8, solver="krylov", key=jax.random.key(1))
    np.testing.assert_allclose(np.asarray(top.eigenvalues), np.asarray(dense.eigenvalues), atol=2e-5)
    assert float(np.max(np.asarray(top.residuals))) < 1e-3


def test_lobpcg_unconverged_warns(rng):
    X = rng.normal(size=(100, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="LOBPCG has not converged"):
        diffusion_map(X, n_components=5, solver="lobpcg", maxiter=1)


# ----------------------------------------------------------------------------- batching, compilation


def test_batch_consistency(x64, rng):
    X = rng.normal(size=(3, 25, 4))
    a = rng.normal(size=(3, 25))
    items = [diffusion_map(X[i], n_components=4, alpha=0.5, align_to=a[i]) for i in range(3)]
    for b in (1, 3):
        res = diffusion_map(X[:b], n_components=4, alpha=0.5, align_to=a[:b])
        assert res.coords.shape == (b, 25, 4)
        for i in range(b):
            np.testing.assert_allclose(np.asarray(res.eigenvalues[i]), np.asarray(items[i].eigenvalues), atol=1e-12)
            # same code and sign rule on both sides, so coordinates must agree exactly up to round-off
            np.testing.assert_allclose(np.asarray(res.coords[i]), np.asarray(items[i].coords), atol=1e-10)


def test_leading_axes_are_kept(rng):
    res = diffusion_map(rng.normal(size=(2, 3, 15, 4)).astype(np.float32), n_components=2)
    assert res.coords.shape == (2, 3, 15, 2)
    assert res.epsilon.shape == (2, 3)
    assert diffusion_distances(res.coords).shape == (2, 3, 15, 15)


def test_no_recompilation_on_second_call(rng):
    X1 = rng.normal(size=(2, 20, 3)).astype(np.float32)
    X2 = rng.normal(size=(2, 20, 3)).astype(np.float32)
    diffusion_map(X1, n_components=3, epsilon=1.0, alpha=0.0, t=1.0)
    before = dm_mod.diffusion_map_batched._cache_size()
    diffusion_map(X2, n_components=3, epsilon=2.0, alpha=0.5, t=3.0)
    assert dm_mod.diffusion_map_batched._cache_size() == before


def test_result_is_a_pytree(rng):
    res = diffusion_map(rng.normal(size=(10, 2)).astype(np.float32), n_components=2)
    leaves = jax.tree_util.tree_leaves(res)
    assert len(leaves) == 12  # 11 arrays and energy_total; no group_means: group_distances/closed are None
    doubled = jax.tree_util.tree_map(lambda x: x, res)
    assert doubled.alpha == res.alpha and doubled.solver == res.solver


# ----------------------------------------------------------------------------- Nystrom


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_nystrom_reproduces_training_points(x64, rng, alpha):
    X = rng.normal(size=(2, 30, 3))
    res = diffusion_map(X, n_components=4, alpha=alpha, t=2.0)
    ext = diffusion_nystrom(res, X, X)
    np.testing.assert_allclose(np.asarray(ext), np.asarray(res.coords), atol=1e-10)


def test_nystrom_of_new_point_near_a_training_point(x64, rng):
    X, s = _curve(80, 5, rng)
    res = diffusion_map(X, n_components=2, align_to=s)
    Y = X[[10, 50]] + 1e-6
    ext = np.asarray(diffusion_nystrom(res, X, Y))
    np.testing.assert_allclose(ext, np.asarray(res.coords)[[10, 50]], atol=1e-5)


def test_nystrom_matches_reference_formula(x64, rng):
    X, Y = rng.normal(size=(20, 3)), rng.normal(size=(5, 3))
    res = diffusion_map(X, n_components=3, alpha=0.5, t=1.0)
    eps = float(res.epsilon)
    K = np.exp(-((Y[:, None] - X[None]) ** 2).sum(-1) / (2 * eps))
    q = np.exp(-ref.sq_distance_matrix(X) / (2 * eps)).sum(1)
    Ka = K / (K.sum(1)[:, None] ** 0.5 * q[None] ** 0.5)
    Py = Ka / Ka.sum(1, keepdims=True)
    expect = Py @ np.asarray(res.eigenvectors)  # lambda^t / lambda = 1 at t = 1
    np.testing.assert_allclose(np.asarray(diffusion_nystrom(res, X, Y)), expect, atol=1e-12)


# ----------------------------------------------------------------------------- symmetric coordinates


def _uneven_cloud(rng, n):
    """A dense cluster and a sparse tail: degrees vary a lot (the case where conventions differ)."""
    return np.concatenate([0.1 * rng.normal(size=(n // 2, 3)), rng.normal(size=(n - n // 2, 3)) * [2.0, 1.0, 0.5]])


@pytest.mark.parametrize("alpha", [0.0, 0.5])
@pytest.mark.parametrize("solver, k", [("eigh", None), ("lobpcg", 4), ("krylov", 4)])
def test_symmetric_coordinates_are_eigenvectors_of_the_conjugate_matrix(x64, rng, alpha, solver, k):
    """"symmetric" = unit eigenvectors of D^-1/2 K_a D^-1/2, checked against scipy.linalg.eigh of that
    matrix by residual and subspace angle (float64: residual < 1e-8, angle < 1e-6)."""
    X = _uneven_cloud(rng, 60)
    res = diffusion_map(X, alpha=alpha, t=1.0, n_components=k, solver=solver, coordinates="symmetric")
    assert res.coordinates == "symmetric" and res.eigenvectors.dtype == jnp.float64
    eps = float(res.epsilon)
    _, K_a, deg, _ = ref.markov_matrices(X, eps, alpha)
    S = K_a / np.sqrt(np.outer(deg, deg))
    w, V = scipy.linalg.eigh(S)
    w, V = w[::-1][1:], V[:, ::-1][:, 1:]  # drop the trivial pair (eigenvalue 1)
    kk = res.eigenvalues.shape[-1]
    np.testing.assert_allclose(np.asarray(res.eigenvalues), w[:kk], atol=1e-8)
    v = np.asarray(res.eigenvectors)
    assert np.linalg.norm(S @ v - v * np.asarray(res.eigenvalues)[None, :], axis=0).max() < 1e-8
    np.testing.assert_allclose(v.T @ v, np.eye(kk), atol=1e-8)  # unit, orthogonal
    assert np.abs(v.T @ np.sqrt(deg / deg.sum())).max() < 1e-8  # the trivial vector is dropped
    assert _max_angle(v[:, :3], V[:, :3]) < 1e-6
    lam = np.clip(np.asarray(res.eigenvalues), 0, None)
    np.testing.assert_allclose(np.asarray(res.coords), v * lam[None, :], atol=1e-12)


def test_symmetric_is_sqrt_pi_times_markov_with_the_same_signs(x64, rng):
    X = _uneven_cloud(rng, 40)
    a = np.linspace(-1, 1, 40)
    mk = diffusion_map(X, t=0.5, energy=0.99, align_to=a)
    sy = diffusion_map(X, t=0.5, energy=0.99, align_to=a, coordinates="symmetric")
    root = np.sqrt(np.asarray(mk.stationary))[:, None]
    np.testing.assert_allclose(np.asarray(sy.coords), root * np.asarray(mk.coords), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(sy.mask), np.asarray(mk.mask))
    np.testing.assert_array_equal(np.asarray(sy.eigenvalues), np.asarray(mk.eigenvalues))


def test_nystrom_refuses_symmetric_maps(rng):
    X = rng.normal(size=(20, 3))
    sy = diffusion_map(X, coordinates="symmetric")
    with pytest.raises(ValueError, match="coordinates='markov'"):
        diffusion_nystrom(sy, X, X[:2])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, kwargs, match",
    [
        (np.zeros((2, 3)) + np.arange(2)[:, None], {}, "at least 3 points"),
        (np.ones((5, 3)), {}, "all identical"),
        (np.array([[0.0, 1.0], [np.nan, 0.0], [1.0, 1.0]]), {}, "must be finite"),
        (np.arange(12.0).reshape(4, 3), {"n_components": 4}, r"\[1, n - 1\] = \[1, 3\]"),
        (np.arange(12.0).reshape(4, 3), {"epsilon": 0.0}, "'epsilon'.*> 0"),
        (np.arange(12.0).reshape(4, 3), {"epsilon": -1.0}, "'epsilon'.*> 0"),
        (np.arange(12.0).reshape(4, 3), {"epsilon": "mean"}, "one of 'median', 'bgh'"),
        (np.arange(12.0).reshape(4, 3), {"alpha": 1.5}, "'alpha'.*\\[0.0, 1.0\\]"),
        (np.arange(12.0).reshape(4, 3), {"t": -1.0}, "'t'"),
        (np.arange(12.0).reshape(4, 3), {"energy": 0.0}, "'energy'"),
        (np.arange(12.0).reshape(4, 3), {"align_to": np.ones(3)}, "'align_to'.*shape"),
        (np.arange(60.0).reshape(20, 3), {"n_components": 4, "solver": "lobpcg"}, "5 \\* n_components < n"),
        (np.arange(60.0).reshape(20, 3), {"solver": "lobpcg"}, "must be an int for solver='lobpcg'"),
        (np.arange(120.0).reshape(40, 3), {"n_components": 6, "solver": "krylov"}, "5 \\* \\(n_components \\+ 2\\) < n"),
        (np.arange(60.0).reshape(20, 3), {"solver": "eigh", "block_size": 8}, "cannot be 'eigh'"),
        (np.arange(3.0), {}, "at least 2 dimensions"),
        (np.arange(12.0).reshape(4, 3), {"coordinates": "authors"}, "'coordinates'.*'markov', 'symmetric'"),
    ],
)
def test_bad_input_raises_clear_errors(X, kwargs, match):
    with pytest.raises(ValueError, match=match):
        diffusion_map(X, **kwargs)


def test_duplicate_cloud_in_a_batch_is_named(rng):
    X = rng.normal(size=(3, 6, 2))
    X[1] = 1.0
    with pytest.raises(ValueError, match=r"batch index \(1,\)"):
        diffusion_map(X)


def test_mostly_duplicated_points_give_zero_median(rng):
    X = np.concatenate([np.zeros((10, 2)), np.ones((1, 2))])
    with pytest.raises(ValueError, match="most pairs of points are duplicates"):
        diffusion_map(X)


def test_degenerate_kernel_warnings(rng):
    X = rng.normal(size=(20, 2048)).astype(np.float32)
    with pytest.warns(UserWarning, match="isolated"):
        diffusion_map(X, epsilon=1.0, n_components=2)
    with pytest.warns(UserWarning, match="all off-diagonal affinities"):
        diffusion_map(X, epsilon=1e7, n_components=2)


def test_diffusion_distances_validates():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        diffusion_distances(np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        diffusion_distances(np.array([[0.0], [np.inf]]))
