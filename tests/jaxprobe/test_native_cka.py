"""The native per-item CKA kernel (jaxprobe/native): against a float64 numpy reference, against
the XLA program it replaces, its fallbacks and its build.

Tolerances: float32 data, float32 products with float64 norms and inner products in the kernel;
|native - float64| <= 2e-6 absolute on every case here (measured ~1e-6 at worst), the same bound
against the XLA program (``jaxprobe._cka_items`` with native=False)."""
from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxprobe
from jaxprobe import _cka_items, native
from jaxprobe.native import build

# Skipped only where the machine has no compilers; with them, a build that fails is a failure.
pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("c++") is None,
                                reason="no C/C++ compiler: the native kernel is unavailable")


@pytest.fixture(autouse=True, scope="module")
def _kernel_built():
    native.library(required=True)

TOL = 2e-6


def unit_gram64(A, *, debiased, trans=False, nv=None):
    """float64 unit estimator Gram of one item: samples the rows (the columns with ``trans``),
    the first ``nv`` real."""
    A = A.astype(np.float64)
    A = A.T if trans else A
    A = A[:nv] if nv is not None else A
    Ac = A - A.mean(0, keepdims=True)
    G = Ac @ Ac.T
    if debiased:
        n = G.shape[0]
        Kt = G * (1 - np.eye(n))
        r = Kt.sum(0) / (n - 2)
        r = r - r.sum() / (2 * (n - 1))
        G = (Kt - r[None, :] - r[:, None]) * (1 - np.eye(n))
    return G / np.linalg.norm(G)


def reference_cka(items, refs, *, debiased, nv=None, trans=False):
    """float64 per-item CKA: items (P, U, a, b) against refs (U, a, b)."""
    P, U = items.shape[:2]
    out = np.empty((P, U))
    for u in range(U):
        g = unit_gram64(refs[u], debiased=debiased, trans=trans, nv=nv)
        for p in range(P):
            out[p, u] = np.sum(unit_gram64(items[p, u], debiased=debiased, trans=trans, nv=nv) * g)
    return out


def run(items, refs, *, flags, n_valid=None, orientation="channels", native_on=True):
    o, rx, ry = _cka_items.item_cka(jnp.asarray(items), jnp.asarray(refs), n_valid, debiased_flags=flags,
                                    orientation=orientation, cells=1, native=native_on)
    return np.asarray(o), np.asarray(rx), np.asarray(ry)


@pytest.mark.parametrize("shape", [(16, 128), (16, 100), (32, 64), (48, 32), (64, 17), (5, 3), (37, 20), (4, 6)])
@pytest.mark.parametrize("orientation", ["channels", "frames"])
@pytest.mark.parametrize("kind", ["normal", "offset", "tiny", "huge"])
def test_against_float64(shape, orientation, kind):
    rng = np.random.default_rng(hash((shape, orientation, kind)) % 2**32)
    refs = rng.standard_normal((3,) + shape).astype(np.float32)
    items = (refs[None] + 0.8 * rng.standard_normal((4, 3) + shape)).astype(np.float32)
    scale = {"normal": 1.0, "offset": 1.0, "tiny": 1e-3, "huge": 1e3}[kind]
    items = items * np.float32(scale) + np.float32(5.0 if kind == "offset" else 0.0)
    trans = orientation == "frames"
    n = shape[1] if trans else shape[0]
    flags = (False, True) if n >= 4 else (False,)
    o, rx, _ = run(items, refs, flags=flags, orientation=orientation)
    for e, deb in enumerate(flags):
        want = reference_cka(items, refs, debiased=deb, trans=trans)
        assert np.max(np.abs(o[e] - want)) <= TOL, (deb, np.max(np.abs(o[e] - want)))
    x = np.swapaxes(items, -1, -2) if trans else items
    m = x.astype(np.float64).mean(-2, keepdims=True)
    xc = x - m
    g = np.einsum("pucf,pudf->pucd", xc, xc)
    gn = np.sqrt(np.sum(g * g, axis=(-2, -1)))
    want_r = gn / (gn + x.shape[-2] * np.sum(m * m, axis=(-2, -1)))
    np.testing.assert_allclose(rx, want_r, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("orientation", ["channels", "frames"])
@pytest.mark.parametrize("n, nv", [(16, 11), (48, 29)])
def test_padded_samples_take_no_part(orientation, n, nv):
    rng = np.random.default_rng(3)
    d = 40
    refs = np.zeros((2, n, d), np.float32)
    items = np.zeros((3, 2, n, d), np.float32)
    refs[:, :nv] = rng.standard_normal((2, nv, d))
    items[:, :, :nv] = rng.standard_normal((3, 2, nv, d)) + 2.0
    if orientation == "frames":  # samples as columns
        refs, items = np.swapaxes(refs, -1, -2).copy(), np.swapaxes(items, -1, -2).copy()
    for flags in ((False,), (True,), (False, True)):
        o, _, _ = run(items, refs, flags=flags, n_valid=np.int32(nv), orientation=orientation)
        for e, deb in enumerate(flags):
            want = reference_cka(items, refs, debiased=deb, nv=nv, trans=orientation == "frames")
            assert np.max(np.abs(o[e] - want)) <= TOL


def test_agrees_with_the_xla_program_and_is_position_independent():
    rng = np.random.default_rng(4)
    refs = rng.standard_normal((7, 16, 128)).astype(np.float32)
    items = (refs[None, None] + rng.standard_normal((5, 6, 7, 16, 128))).astype(np.float32)
    a = run(items, refs, flags=(False, True))
    b = run(items, refs, flags=(False, True), native_on=False)
    for x, y in zip(a, b):
        assert np.max(np.abs(x - y)) <= TOL
    # the same items elsewhere, and split over other thread counts: the same bits
    gy = jnp.stack(_cka_items.unit_grams(jnp.asarray(refs), (False, True), False)[0])

    def kernel(X, threads):
        return jax.jit(lambda X: native.cka_items(X, gy, None, debiased_flags=(False, True), trans=False,
                                                  threads=threads))(jnp.asarray(X))

    o0, r0 = kernel(items, 2)
    for threads in (1, 3):
        o, r = kernel(items[::-1].copy(), threads)
        np.testing.assert_array_equal(np.asarray(o)[:, ::-1], np.asarray(o0))
        np.testing.assert_array_equal(np.asarray(r)[::-1], np.asarray(r0))


def test_public_cka_and_its_errors_run_on_the_kernel():
    rng = np.random.default_rng(5)
    clean = rng.standard_normal((4, 16, 32)).astype(np.float32)
    noisy = (clean[None] + rng.standard_normal((3, 4, 16, 32))).astype(np.float32)
    assert native.usable(jnp.asarray(noisy), scaled=False, n=16, d=32)
    got = np.asarray(jaxprobe.cka(clean, noisy))
    want = reference_cka(noisy, clean, debiased=False)
    assert np.max(np.abs(got - want)) <= TOL
    bad = noisy.copy()
    bad[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="non-finite|NaN"):
        jaxprobe.cka(clean, bad)
    const = noisy.copy()
    const[2, 1] = 1.5
    with pytest.raises(ValueError, match="constant"):
        jaxprobe.cka(clean, const)
    # float32 overflow of the Gram norm: the kernel says -1, the call is redone scaled (XLA)
    big = noisy * np.float32(1e18)
    got = np.asarray(jaxprobe.cka(clean, big))
    assert np.max(np.abs(got - want)) <= 1e-5


def test_the_kernel_reports_out_of_range_grams():
    rng = np.random.default_rng(6)
    refs = rng.standard_normal((2, 8, 24)).astype(np.float32)
    items = np.repeat(refs[None], 3, axis=0).copy()
    items[0, 0] = 1e30  # constant and huge
    items[1, 1, 2, 3] = np.inf
    items[2, 0] = 0.0  # all zero: g2 = 0 < FLT_MIN
    _, rx, _ = run(items, refs, flags=(False,))
    assert rx[0, 0] == -1 and rx[1, 1] == -1 and rx[2, 0] == -1
    assert np.all(rx[np.array([0, 1, 2]), np.array([1, 0, 1])] > 0.5)


def test_not_used_where_it_does_not_apply(monkeypatch):
    x32 = jnp.zeros((2, 3, 16, 5), jnp.float32)
    assert native.usable(x32, scaled=False, n=16, d=5)
    assert not native.usable(x32, scaled=True, n=16, d=5)
    assert not native.usable(jnp.zeros((2, 3, 16, 5), jnp.float16), scaled=False, n=16, d=5)
    assert not native.usable(np.zeros((2, 3, 16, 5), np.float64), scaled=False, n=16, d=5)
    # shapes off the fast path (its float64 path is slower than XLA's program there)
    assert native.usable(x32, scaled=False, n=48, d=32)
    assert not native.usable(x32, scaled=False, n=40, d=64) and not native.usable(x32, scaled=False, n=16, d=2048)
    rng = np.random.default_rng(9)
    clean = rng.standard_normal((4, 40, 24)).astype(np.float32)
    noisy = (clean[None] + rng.standard_normal((3, 4, 40, 24))).astype(np.float32)
    assert jaxprobe._cka._pairs_on_native_kernel(noisy[0], clean, debiased=False, scaled=False) is None
    np.testing.assert_allclose(np.asarray(jaxprobe.cka(clean, noisy)), reference_cka(noisy, clean, debiased=False),
                               atol=TOL)
    monkeypatch.setenv("JAXPROBE_NATIVE", "0")
    assert not native.usable(x32, scaled=False, n=16, d=5)
    with pytest.raises(native.NativeUnavailable, match="switched off"):
        native.library(required=True)


def test_threads_setting(monkeypatch):
    monkeypatch.setenv("JAXPROBE_NATIVE_THREADS", "3")
    assert native.native_threads() == 3
    monkeypatch.setenv("JAXPROBE_NATIVE_THREADS", "zero")
    with pytest.raises(ValueError, match="JAXPROBE_NATIVE_THREADS must be a positive integer; got 'zero'"):
        native.native_threads()


def test_builds_into_a_fresh_cache_and_reuses_it(tmp_path):
    path = build.build_library(tmp_path)
    mtime = path.stat().st_mtime_ns
    assert build.build_library(tmp_path) == path and path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    assert hasattr(build.load_library(path), "jaxprobe_cka_items")


def test_sources_compile_without_warnings(tmp_path):
    build.build_library(tmp_path, extra_flags=("-Werror", "-Wextra"))


def test_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(native.NativeUnavailable, match="no C\\+\\+ compiler found"):
        build.build_library(tmp_path)


# ----------------------------------------------------------------------------- independent pairs
@pytest.mark.parametrize("trans", [False, True])
def test_unit_grams_against_float64(trans):
    rng = np.random.default_rng(7)
    items = (rng.standard_normal((3, 5, 16, 24)) + 3.0).astype(np.float32)
    g, r = jax.jit(lambda X: native.unit_grams(X, None, debiased_flags=(False, True), trans=trans))(items)
    g = np.asarray(g)
    for idx in np.ndindex(3, 5):
        for e, deb in enumerate((False, True)):
            assert np.max(np.abs(g[(e,) + idx] - unit_gram64(items[idx], debiased=deb, trans=trans))) <= TOL
    assert np.all(np.asarray(r) > 0)


@pytest.mark.parametrize("debiased", [False, True])
def test_public_cka_of_independent_pairs(debiased):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((6, 7, 16, 40)).astype(np.float32)
    Y = (X[..., :24] + 0.5 * rng.standard_normal((6, 7, 16, 24))).astype(np.float32)  # other feature count
    assert jaxprobe._cka._pairs_on_native_kernel(X, Y, debiased=debiased, scaled=False) is not None
    got = np.asarray(jaxprobe.cka(X, Y, debiased=debiased))
    want = np.array([[np.sum(unit_gram64(X[i, j], debiased=debiased) * unit_gram64(Y[i, j], debiased=debiased))
                      for j in range(7)] for i in range(6)])
    assert np.max(np.abs(got - want)) <= TOL
    bad = Y.copy()
    bad[2, 3, 0, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite|inf"):
        jaxprobe.cka(X, bad, debiased=debiased)
