"""The diffusion maps' median rule on the native library (``jaxprobe.native.upper_median``): exact
against numpy's order statistics, bit for bit against the XLA bisection it replaces
(``kernels.affinity.epsilon_median``), and the maps unchanged by the switch.

Tolerances: none. Both implementations return order statistics of the same values, and the
mean of the two middle values is one float32 addition and a halving in both, so every
comparison here is of bit patterns."""
from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprobe import native
from jaxprobe.diffusion import diffusion_map, diffusion_map_batched
from jaxprobe_kernels.affinity import epsilon_median

pytestmark = pytest.mark.skipif(shutil.which("cc") is None or shutil.which("c++") is None,
                                reason="no C/C++ compiler: the native library is unavailable")

native_median = jax.jit(native.upper_median)
xla_median = jax.jit(epsilon_median)


@pytest.fixture(autouse=True, scope="module")
def _library_built():
    native.library(required=True)


def reference(D):
    """The median over i < j of max(D, 0) from numpy's sort; the even case as float32 arithmetic."""
    iu = np.triu_indices(D.shape[0], 1)
    v = np.sort(np.maximum(D[iu], np.float32(0)).astype(np.float32))
    m = v.size
    if m % 2:
        return v[(m - 1) // 2]
    return np.float32(0.5) * (v[m // 2 - 1] + v[m // 2])


def bits(x):
    return np.asarray(x, np.float32).view(np.int32)


def cases(rng):
    """Matrices that stress the selection: both pair-count parities, ties, negatives and -0.0
    (max(v, 0) maps them to +0.0), values spanning many exponents, one radix bucket holding
    everything, and the two middle values in different buckets."""
    for n in (2, 3, 4, 5, 8, 31, 64):
        yield rng.standard_normal((n, n)).astype(np.float32)
        yield rng.integers(-2, 4, (n, n)).astype(np.float32)
        D = np.abs(rng.standard_normal((n, n))).astype(np.float32) * np.float32(1e-30)
        D[rng.random((n, n)) < 0.2] = -0.0
        yield D
        yield (np.exp(rng.uniform(-60, 60, (n, n))) * rng.choice([-1, 1], (n, n))).astype(np.float32)
        yield np.float32(3.0) + rng.integers(0, 3, (n, n)).astype(np.float32) * np.float32(2.0 ** -20)
    D = np.ones((6, 6), np.float32)  # 15 pairs: 7 at 1.0 and 8 at 2^20 -> the middle values sit in two buckets
    D[np.triu_indices(6, 1)] = [1.0] * 7 + [2.0 ** 20] * 8
    yield D
    D = np.ones((5, 5), np.float32)  # 10 pairs (even): the two middle values in different buckets
    D[np.triu_indices(5, 1)] = [1.0] * 5 + [2.0 ** 20] * 5
    yield D


def test_upper_median_is_the_exact_order_statistic_and_matches_the_bisection():
    rng = np.random.default_rng(0)
    for D in cases(rng):
        got = native_median(D)
        assert bits(got) == bits(reference(D)), (D.shape, got, reference(D))
        assert bits(got) == bits(xla_median(D)), (D.shape, got, xla_median(D))


def test_upper_median_batched_and_under_vmap():
    D = np.random.default_rng(1).standard_normal((3, 4, 20, 20)).astype(np.float32)
    expected = np.asarray(jax.vmap(jax.vmap(xla_median))(D))
    assert np.array_equal(bits(native_median(D)), bits(expected))
    assert np.array_equal(bits(jax.vmap(native_median)(D)), bits(expected))
    assert np.array_equal(bits(jax.vmap(jax.vmap(native.upper_median))(D)), bits(expected))


def test_upper_median_takes_non_finite_values_without_failing():
    """A NaN distance only arises from non-finite data, which the maps reject by name after the
    call; the selection itself must run to the end (integer keys: a total order)."""
    D = np.random.default_rng(2).standard_normal((9, 9)).astype(np.float32)
    D[0, 3], D[2, 5], D[1, 8] = np.nan, -np.nan, np.inf
    assert bits(native_median(D)) == bits(xla_median(D))


def test_upper_median_refuses_non_square_input():
    with pytest.raises(ValueError, match=r"square \(\.\.\., n, n\).*shape \(3, 4\)"):
        native.upper_median(jnp.zeros((3, 4), jnp.float32))
    with pytest.raises(ValueError, match=r"n >= 2.*shape \(1, 1\)"):
        native.upper_median(jnp.zeros((1, 1), jnp.float32))
    with pytest.raises(TypeError, match="float32 distances; got float64"):
        native.upper_median(np.zeros((3, 3), np.float64))


def test_median_usable_only_for_float32_on_the_cpu():
    assert native.median_usable(jnp.zeros((4, 3), jnp.float32))
    assert native.median_usable(np.zeros((4, 3), np.float32))
    assert not native.median_usable(np.zeros((4, 3), np.float64))


@pytest.mark.parametrize("solver", ["eigh", "krylov"])
def test_maps_are_bit_identical_with_the_native_median(solver):
    rng = np.random.default_rng(3)
    X = jnp.asarray(rng.standard_normal((2, 120, 40)).astype(np.float32))
    align = jnp.asarray(rng.standard_normal((2, 120)).astype(np.float32))
    f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    k = 119 if solver == "eigh" else 4
    kw = dict(rule="median", k=k, solver=solver, block_size=None, maxiter=100, tol=None, use_energy=True,
              use_align=True, sequential=solver == "krylov")
    args = (X, f32(1.0), f32(0.0), f32(0.5), f32(0.9), align, jax.random.key(0))
    a = diffusion_map_batched(*args, native_median=True, **kw)
    b = diffusion_map_batched(*args, native_median=False, **kw)
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x), np.asarray(y))
    # the public call takes the native rule on the CPU and reports the same bandwidth
    m = diffusion_map(X, n_components=k if solver == "krylov" else None, solver=solver, t=0.5, energy=0.9,
                      align_to=align)
    assert np.array_equal(bits(m.epsilon), bits(b[3]))
