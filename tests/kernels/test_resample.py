"""The count-matrix bootstrap equals explicit index resampling, replicate by replicate."""
import numpy as np
import pytest

from jaxprobe_kernels import resample
from tests.reference import cka_ref as ref


def _draws(rng, n, B):
    C = np.zeros((B, n), np.int64)
    for b in range(B):
        np.add.at(C[b], rng.integers(0, n, n), 1)
    return C


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_counts_equal_index_resampling(rng, debiased, chunk):
    n, B = 12, 20
    K = ref.linear_gram(rng.standard_normal((n, 30)))
    L = ref.rbf_gram(rng.standard_normal((n, 4)), 1.7)
    C = _draws(rng, n, B)
    kl, kk, ll = resample.bootstrap_hsic_terms(K, L, C, debiased=debiased, chunk=chunk)
    h = ref.hsic_unbiased if debiased else ref.hsic_biased
    for b in range(B):
        idx = ref.counts_to_indices(C[b])
        Kr, Lr = K[np.ix_(idx, idx)], L[np.ix_(idx, idx)]
        np.testing.assert_allclose(kl[b], h(Kr, Lr), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(kk[b], h(Kr, Kr), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(ll[b], h(Lr, Lr), rtol=1e-10, atol=1e-13)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("debiased", [False, True])
def test_leave_one_out_rows_and_unequal_totals(rng, debiased):
    """Rows need not sum to n: jackknife rows (n - 1) and cluster draws (any total)."""
    n = 10
    K = ref.linear_gram(rng.standard_normal((n, 5)))
    L = ref.linear_gram(rng.standard_normal((n, 5)))
    C = np.vstack([1 - np.eye(n, dtype=int), [[2, 0, 0, 3, 1, 1, 0, 0, 2, 0]]])
    kl, _, _ = resample.bootstrap_hsic_terms(K, L, C, debiased=debiased)
    h = ref.hsic_unbiased if debiased else ref.hsic_biased
    for b in range(C.shape[0]):
        idx = ref.counts_to_indices(C[b])
        np.testing.assert_allclose(kl[b], h(K[np.ix_(idx, idx)], L[np.ix_(idx, idx)]), rtol=1e-10, atol=1e-13)


def test_float32_agreement(rng):
    n, B = 50, 30
    X = rng.standard_normal((n, 64))
    Y = X + rng.standard_normal((n, 64))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    C = _draws(rng, n, B)
    kl, kk, ll = resample.bootstrap_hsic_terms(K.astype(np.float32), L.astype(np.float32), C)
    got = np.asarray(kl / np.sqrt(kk * ll))
    expect = [ref.resampled_cka(K, L, ref.counts_to_indices(c)) for c in C]
    np.testing.assert_allclose(got, expect, rtol=2e-4)  # float32: stated tolerance 2e-4 relative


def test_weighted_means(rng):
    v = rng.standard_normal((15, 3))
    C = _draws(rng, 15, 8)
    got = resample.bootstrap_weighted_means(v, C)
    for b in range(8):
        np.testing.assert_allclose(got[b], v[ref.counts_to_indices(C[b])].mean(0), rtol=1e-5)


def test_count_programs_compiled_at_level_1_give_the_default_level_rows(key):
    """The count matrices' top-level programs are compiled at LLVM optimisation level 1 (cheap to
    compile): their rows are bit-equal to the same functions compiled at the default level."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxprobe_kernels import resample as R

    assert R.INTEGER_PROGRAM == {"xla_backend_optimization_level": 1}
    ids = jnp.arange(300)
    labels = jnp.asarray(np.repeat(np.arange(5), [3, 4, 2, 5, 4]).astype(np.int32))
    members = np.zeros((5, 5), np.int32)
    sizes = np.array([3, 4, 2, 5, 4], np.int32)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for g in range(5):
        members[g, :sizes[g]] = start[g] + np.arange(sizes[g])
    cases = [(R.iid_counts, R.iid_counts_top, (key, ids), {"n": 18}),
             (R.cluster_counts, R.cluster_counts_top, (key, ids, labels), {"n_groups": 5}),
             (R.hier_counts, R.hier_counts_top, (key, ids, jnp.asarray(members), jnp.asarray(sizes)), {"n": 18})]
    for fn, top, args, kw in cases:
        default = fn(*args, **kw)
        got = top(*args, **kw)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(default))
        assert np.asarray(got).sum(axis=1).min() > 0
