"""Issue 13: no silent numbers. One constant-representation rule and one message in every
path that computes CKA (paths x dtypes x estimators), the dtype policy, overflow-safe
statistics, and type checks of bool / choice / key parameters."""
from __future__ import annotations


import jax
import numpy as np
import pytest
import scipy.stats

import jaxprobe
from jaxprobe._validate import CONSTANT_EPS_FACTOR, constant_threshold
from jaxprobe.studies.sweep.analysis import per_item_cka_all
from tests.jaxprobe.test_streaming import write_store

DTYPES = ("float32", "float64")
MSG = "is a constant representation"


def _x64(dtype):
    jax.config.update("jax_enable_x64", dtype == "float64")


@pytest.fixture(autouse=True)
def _restore_x64():
    old = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", old)


def _degenerate(kind, shape, dtype, rng):
    """An item whose rows are identical: zeros (a dead layer), ones, or ones plus noise
    at 3 eps (only rounding noise in the computing dtype)."""
    if kind == "zeros":
        return np.zeros(shape, dtype)
    a = np.ones(shape, np.float64)
    if kind == "noise":
        a = a + 3 * np.finfo(dtype).eps * rng.standard_normal(shape)
    return a.astype(dtype)


def _batch(rng, dtype, n, d, kind, bad=1, B=3):
    X = rng.standard_normal((B, n, d)).astype(dtype)
    X[bad] = _degenerate(kind, (n, d), dtype, rng)
    return X


PATHS = ("cka_gram", "cka_features", "cka_broadcast", "cka_rbf", "cka_mesh", "cka_matrix", "bootstrap_cka",
         "bootstrap_cka_rbf", "streaming_gram", "streaming_features", "sweep_per_item")


def _run(path, dtype, debiased, kind, rng, tmp_path):
    """Call ``path`` with a degenerate item; return (callable, regex of the expected message)."""
    key = jax.random.key(0)
    if path in ("cka_gram", "cka_mesh"):
        X, Y = _batch(rng, dtype, 16, 40, kind), rng.standard_normal((3, 16, 40)).astype(dtype)
        mesh = 1 if path == "cka_mesh" else None
        return (lambda: jaxprobe.cka(X, Y, debiased=debiased, mesh=mesh)), r"'X' parameter of cka " + MSG + r" at batch index \(1,\)"
    if path == "cka_features":  # d < n: the feature-space formula
        X, Y = rng.standard_normal((3, 60, 4)).astype(dtype), _batch(rng, dtype, 60, 4, kind, bad=2)
        return (lambda: jaxprobe.cka(X, Y, debiased=debiased)), r"'Y' parameter of cka " + MSG + r" at batch index \(2,\)"
    if path == "cka_broadcast":  # noisy (K, U, n, d) against clean (U, n, d): Y's own index is named
        X = rng.standard_normal((2, 3, 16, 40)).astype(dtype)
        Y = _batch(rng, dtype, 16, 40, kind, bad=2)
        return (lambda: jaxprobe.cka(X, Y, debiased=debiased)), r"'Y' parameter of cka " + MSG + r" at batch index \(2,\)"
    if path == "cka_rbf":
        X, Y = _batch(rng, dtype, 16, 40, kind), rng.standard_normal((3, 16, 40)).astype(dtype)
        return (lambda: jaxprobe.cka(X, Y, kernel="rbf", debiased=debiased)), r"'X' parameter of cka " + MSG + r" at batch index \(1,\)"
    if path == "cka_matrix":
        Xs = list(_batch(rng, dtype, 16, 40, kind))
        return (lambda: jaxprobe.cka_matrix(Xs, debiased=debiased)), r"'Xs\[1\]' parameter of cka_matrix " + MSG
    if path.startswith("bootstrap_cka"):
        X, Y = rng.standard_normal((3, 16, 40)).astype(dtype), _batch(rng, dtype, 16, 40, kind)
        kernel = "rbf" if path.endswith("rbf") else "linear"
        return (lambda: jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=20, debiased=debiased, kernel=kernel)), \
            r"'Y' parameter of bootstrap_cka " + MSG + r" at batch index \(1,\)"
    if path.startswith("streaming"):
        a = rng.standard_normal((24, 3, 5)).astype(dtype)
        b = _degenerate(kind, (24, 2, 3), dtype, rng)
        store = write_store(tmp_path / "s", {"a": a, "b": b}, chunk_size=7)
        method = path.split("_")[1]
        return (lambda: jaxprobe.streaming_cka(store, "a", "b", method=method, debiased=debiased)), \
            r"'layer_y' parameter of streaming_cka \(layer 'b'\) " + MSG
    assert path == "sweep_per_item"
    noisy = rng.standard_normal((2, 3, 4, 16, 40)).astype(dtype)
    noisy[1, 2, 3] = _degenerate(kind, (16, 40), dtype, rng)
    clean = rng.standard_normal((4, 16, 40)).astype(dtype)
    est = ("debiased",) if debiased else ("biased",)
    return (lambda: per_item_cka_all(noisy, clean, estimators=est)), r"'noisy' parameter of per_item_cka_all " + MSG + r" at batch index \(1, 2, 3\)"


# every (path, estimator) pair that exists: streaming's feature-space method has no debiased form
PATH_ESTIMATORS = [pytest.param(p, d, id=f"{p}-{'debiased' if d else 'biased'}") for p in PATHS for d in (False, True)
                   if not (p == "streaming_features" and d)]


@pytest.mark.parametrize("kind", ["zeros", "ones", "noise"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path, debiased", PATH_ESTIMATORS)
def test_constant_item_raises_in_every_path(path, dtype, debiased, kind, rng, tmp_path):
    _x64(dtype)
    call, pattern = _run(path, dtype, debiased, kind, rng, tmp_path)
    with pytest.raises(ValueError, match=pattern):
        call()


@pytest.mark.parametrize("dtype", DTYPES)
def test_near_constant_above_the_threshold_is_computed(dtype, rng):
    """The same offset with a spread well above rounding noise is a valid input: in float64
    ones + 3e-7 noise gives the exact value (issue: 0.2755 vs exact 0.2905 in float32, where
    it is now an error)."""
    _x64(dtype)
    spread = 3e-7 if dtype == "float64" else 3e-3
    A = 1.0 + spread * rng.standard_normal((40, 30))
    B = A[:, :20] + spread * rng.standard_normal((40, 20))
    Ac, Bc = A - A.mean(0), B - B.mean(0)
    want = np.sum((Ac.T @ Bc) ** 2) / np.sqrt(np.sum((Ac.T @ Ac) ** 2) * np.sum((Bc.T @ Bc) ** 2))
    got = float(jaxprobe.cka(A.astype(dtype), B.astype(dtype)))
    assert got == pytest.approx(want, rel=1e-9 if dtype == "float64" else 2e-3)
    boot = jaxprobe.bootstrap_cka(A.astype(dtype), B.astype(dtype), key=jax.random.key(0), n_boot=10)
    assert float(boot.estimate) == pytest.approx(got, rel=1e-5)


def test_threshold_is_stated_against_the_dtype():
    assert np.sqrt(constant_threshold(np.float32)) == pytest.approx(CONSTANT_EPS_FACTOR * np.finfo(np.float32).eps)
    assert np.sqrt(constant_threshold(np.float64)) == pytest.approx(CONSTANT_EPS_FACTOR * np.finfo(np.float64).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_cka_is_scale_invariant_at_extreme_scales(dtype, scale, rng):
    """cka(X * 1e20, Y) blamed a 'constant representation' (float32 overflow); now scaled first."""
    _x64(dtype)
    for n, d in ((16, 40), (60, 4)):  # the Gram and the feature-space paths
        X = rng.standard_normal((n, d)).astype(dtype)
        Y = (X[:, :3] @ rng.standard_normal((3, d)) + rng.standard_normal((n, d))).astype(dtype)
        for kw in ({}, {"debiased": True}, {"kernel": "rbf"}):
            want = float(jaxprobe.cka(X, Y, **kw))
            got = jaxprobe.cka((X * scale).astype(dtype), Y, **kw)
            assert float(got) == pytest.approx(want, rel=1e-4), (n, d, kw)
        r = jaxprobe.bootstrap_cka((X * scale).astype(dtype), Y, key=jax.random.key(1), n_boot=5)
        assert float(r.estimate) == pytest.approx(float(jaxprobe.cka(X, Y)), rel=1e-4)


@pytest.mark.parametrize("narrow", ["float16", "bfloat16"])
def test_narrow_floats_are_upcast(narrow, rng):
    import jax.numpy as jnp

    X = jnp.asarray(rng.standard_normal((16, 40)), dtype=narrow)
    out = jaxprobe.cka(X, X)
    assert out.dtype == jnp.float32 and float(out) == pytest.approx(1.0, abs=1e-5)
    dm = jaxprobe.diffusion_map(jnp.asarray(rng.standard_normal((30, 5)), dtype=narrow))
    assert dm.eigenvalues.dtype == jnp.float32


@pytest.mark.parametrize("bad", [np.ones((16, 4), bool), np.ones((16, 4), np.complex64), np.ones((16, 4), np.int32)])
def test_representations_reject_bool_complex_and_int(bad, rng):
    with pytest.raises(TypeError, match=r"'X' parameter of cka must hold floating-point numbers"):
        jaxprobe.cka(bad, rng.standard_normal((16, 4)))


def test_float64_beyond_float32_range_without_x64():
    jax.config.update("jax_enable_x64", False)
    X = np.random.default_rng(0).standard_normal((16, 4)) * 1e300
    with pytest.raises(ValueError, match=r"'X' parameter of cka holds float64 values up to .*jax_enable_x64"):
        jaxprobe.cka(X, X)
    jax.config.update("jax_enable_x64", True)
    assert float(jaxprobe.cka(X, X)) == pytest.approx(1.0, rel=1e-12)  # kept as float64 with x64 on


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e30, 1e-25])
def test_linregress_matches_scipy_at_extreme_scales(dtype, scale):
    _x64(dtype)
    x = np.array([1, 2, 3, 4], dtype) * np.asarray(scale, dtype)
    y = [1, 2, 3, 5]
    got, want = jaxprobe.linregress(x, y), scipy.stats.linregress(x.astype(np.float64), y)
    assert float(got.slope) == pytest.approx(want.slope, rel=1e-5)
    assert float(got.r2) == pytest.approx(want.rvalue ** 2, rel=1e-5)
    assert float(got.intercept) == pytest.approx(want.intercept, rel=1e-5)
    assert float(got.slope_stderr) == pytest.approx(want.stderr, rel=1e-4)
    assert float(jaxprobe.pearson(x, y)) == pytest.approx(want.rvalue, rel=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bootstrap_mean_near_float32_max(dtype, rng):
    _x64(dtype)
    v = (1e37 * (1 + 0.1 * rng.standard_normal(60))).astype(dtype)
    r = jaxprobe.bootstrap_mean(v, key=jax.random.key(0), n_boot=200)
    assert np.isfinite([r.estimate, r.low, r.high]).all() and np.isfinite(r.replicates).all()
    assert float(r.estimate) == pytest.approx(v.astype(np.float64).mean(), rel=1e-5)
    assert float(r.low) < float(r.estimate) < float(r.high)


@pytest.mark.parametrize("call, pattern", [
    (lambda X: jaxprobe.cka(X, X, debiased="no"), r"'debiased' parameter of cka must be a bool"),
    (lambda X: jaxprobe.cka(X, X, debiased=1), r"'debiased' parameter of cka must be a bool"),
    (lambda X: jaxprobe.cka_matrix([X], debiased="yes"), r"'debiased' parameter of cka_matrix must be a bool"),
    (lambda X: jaxprobe.cka(X, X, kernel="rbf", sigma="foo"), r"'sigma' parameter of cka must be None, 'median'"),
    (lambda X: jaxprobe.cka(X, X, kernel="rbf", sigma=("mean", 1.0)), r"'sigma\[0\] \(bandwidth rule\)' parameter of cka"),
    (lambda X: jaxprobe.cka(X, X, kernel="RBF"), r"'kernel' parameter of cka must be one of"),
    (lambda X: jaxprobe.bootstrap_cka(X, X, key=0), r"'key' parameter of bootstrap_cka must be a JAX PRNG key"),
    (lambda X: jaxprobe.bootstrap_cka(X, X, key=None), r"'key' parameter of bootstrap_cka must be a JAX PRNG key"),
    (lambda X: jaxprobe.bootstrap_cka(X, X, key=jax.random.key(0), hierarchical="no"), r"'hierarchical' parameter"),
    (lambda X: jaxprobe.bootstrap_mean(X[:, 0], key=0), r"'key' parameter of bootstrap_mean must be a JAX PRNG key"),
    (lambda X: jaxprobe.resample_counts(None, 3, 4), r"'key' parameter of resample_counts"),
])
def test_wrong_types_name_the_argument(call, pattern, rng):
    X = rng.standard_normal((16, 6)).astype(np.float32)
    with pytest.raises((TypeError, ValueError), match=pattern):
        call(X)
