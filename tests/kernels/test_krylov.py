"""kernels.krylov against numpy/scipy's dense eigendecomposition (float64 reference)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from jaxprobe_kernels.krylov import block_krylov_eigh, converged


def _matrix(rng, n, spectrum):
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (Q * spectrum) @ Q.T, Q


def _solve(A, X0, deflate, k, steps):
    A = jnp.asarray(A)
    return jax.jit(lambda X0, d: block_krylov_eigh(lambda V: A @ V, X0, d, k=k, steps=steps))(X0, deflate)


def test_top_k_of_a_decaying_spectrum_float64(x64, rng):
    n, k = 200, 6
    spectrum = 0.7 ** np.arange(n)
    A, _ = _matrix(rng, n, spectrum)
    w, V, AV = _solve(A, rng.normal(size=(n, k + 2)), np.zeros((n, 0)), k, 6)
    ref_w, ref_V = scipy.linalg.eigh(A, subset_by_index=[n - k, n - 1])
    np.testing.assert_allclose(np.asarray(w), ref_w[::-1], rtol=1e-10, atol=1e-12)
    assert np.max(scipy.linalg.subspace_angles(np.asarray(V), ref_V)) < 1e-7
    np.testing.assert_allclose(np.asarray(AV), A @ np.asarray(V), atol=1e-12)  # AV is exact, not estimated
    np.testing.assert_allclose(np.asarray(V).T @ np.asarray(V), np.eye(k), atol=1e-12)
    assert bool(converged(w, V, AV, jnp.finfo(jnp.float64).eps))


def test_deflated_vector_is_kept_out(x64, rng):
    """The largest eigenvector, given as ``deflate``, must not come back: the next k do."""
    n, k = 120, 4
    spectrum = np.r_[5.0, 0.6 ** np.arange(n - 1)]
    A, Q = _matrix(rng, n, spectrum)
    w, V, _ = _solve(A, rng.normal(size=(n, k + 2)), Q[:, :1], k, 6)
    np.testing.assert_allclose(np.asarray(w), spectrum[1:k + 1], rtol=1e-10)
    assert np.max(np.abs(Q[:, 0] @ np.asarray(V))) < 1e-10


def test_convergence_test_rejects_a_flat_spectrum(rng):
    """A few Krylov steps cannot resolve a flat spectrum: the test must say so (the
    diffusion map then hands the pairs to LOBPCG)."""
    n, k = 300, 10
    A, _ = _matrix(rng, n, np.linspace(1.0, 0.9, n))
    A = A.astype(np.float32)
    w, V, AV = _solve(A, rng.normal(size=(n, k + 2)).astype(np.float32), np.zeros((n, 0), np.float32), k, 2)
    assert not bool(converged(w, V, AV, jnp.finfo(jnp.float32).eps))
