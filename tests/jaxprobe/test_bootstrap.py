import jax
import numpy as np
import pytest
from scipy import stats

import jaxprobe
from tests.reference import cka_ref as ref


def _data(rng, n=24, d=10):
    X = rng.standard_normal((n, d))
    Y = X @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal((n, d))
    return X, Y


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("design", ["iid", "cluster", "hierarchical"])
def test_replicates_equal_explicit_index_resampling(rng, key, debiased, design):
    X, Y = _data(rng)
    n = X.shape[0]
    groups = None if design == "iid" else np.repeat(np.arange(6), 4)
    hier = design == "hierarchical"
    res = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=40, groups=groups, hierarchical=hier, debiased=debiased)
    C = np.asarray(jaxprobe.resample_counts(key, 40, n, groups=groups, hierarchical=hier))
    if design == "cluster":  # rows of a group share one count
        assert all(len(set(c[g * 4:(g + 1) * 4])) == 1 for c in C for g in range(6))
    K, L = ref.linear_gram(X), ref.linear_gram(Y)
    for b in range(40):
        expect = ref.resampled_cka(K, L, ref.counts_to_indices(C[b]), debiased)
        np.testing.assert_allclose(res.replicates[b], expect, rtol=1e-10)
    np.testing.assert_allclose(res.estimate, ref.cka(K, L, debiased), rtol=1e-10)


def test_hierarchical_counts_stay_inside_drawn_groups(key):
    groups = np.repeat(np.arange(5), [2, 3, 4, 5, 6])
    C = np.asarray(jaxprobe.resample_counts(key, 200, 20, groups=groups, hierarchical=True))
    sizes = np.bincount(groups)
    for c in C:
        per_group = np.bincount(groups, weights=c).astype(int)
        # each group's total is a multiple of its size (drawn k times, size rows each time)
        assert np.all(per_group % sizes == 0)
        assert per_group.sum() == sum(sizes[g] * (per_group[g] // sizes[g]) for g in range(5))


@pytest.mark.usefixtures("x64")
def test_percentile_and_bca_match_reference(rng, key):
    X, Y = _data(rng, n=30)
    K, L = ref.linear_gram(X), ref.linear_gram(Y)
    p = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=300, level=0.9)
    lo, hi = ref.percentile_interval(np.asarray(p.replicates), 0.9)
    np.testing.assert_allclose([p.low, p.high], [lo, hi], rtol=1e-12)
    b = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=300, level=0.9, method="bca")
    np.testing.assert_allclose(b.replicates, p.replicates)
    jack = [ref.cka(np.delete(np.delete(K, i, 0), i, 1), np.delete(np.delete(L, i, 0), i, 1)) for i in range(30)]
    lo, hi = ref.bca_interval(np.asarray(b.replicates), float(b.estimate), jack, 0.9)
    np.testing.assert_allclose([b.low, b.high], [lo, hi], rtol=1e-12)


def test_bootstrap_mean_bca_matches_scipy_statistically(rng, key):
    """Against scipy.stats.bootstrap (own resamples): intervals agree to Monte Carlo error."""
    v = rng.exponential(size=60)
    ours = jaxprobe.bootstrap_mean(v, key=key, n_boot=20000, method="bca")
    theirs = stats.bootstrap((v,), np.mean, n_resamples=20000, method="BCa", random_state=1).confidence_interval
    se = v.std() / np.sqrt(60)
    assert abs(float(ours.low) - theirs.low) < 0.1 * se
    assert abs(float(ours.high) - theirs.high) < 0.1 * se


@pytest.mark.slow
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_mean_interval_coverage_near_nominal(method):
    """400 synthetic studies with a known population mean (0): coverage of the 90% interval."""
    rng = np.random.default_rng(7)
    data = rng.standard_normal((400, 40))
    hits = 0
    for s in range(400):
        r = jaxprobe.bootstrap_mean(data[s], key=jax.random.key(s), n_boot=500, level=0.9, method=method)
        hits += float(r.low) <= 0.0 <= float(r.high)
    cover = hits / 400
    assert 0.84 <= cover <= 0.95, cover  # nominal 0.90; binomial sd 0.015, bootstrap undercovers slightly at n=40


def test_cluster_bootstrap_of_means(rng, key):
    """Per-item values grouped by noise type: the cluster interval is wider when groups differ."""
    groups = np.repeat(np.arange(8), 10)
    v = rng.standard_normal(80) * 0.1 + np.repeat(rng.standard_normal(8), 10)
    iid = jaxprobe.bootstrap_mean(v, key=key, n_boot=2000)
    clu = jaxprobe.bootstrap_mean(v, key=key, n_boot=2000, groups=groups)
    assert float(clu.high - clu.low) > 2 * float(iid.high - iid.low)


def test_batched_values_share_resamples(rng, key):
    v = rng.standard_normal((2, 3, 25))
    res = jaxprobe.bootstrap_mean(v, key=key, n_boot=50)
    assert res.replicates.shape == (50, 2, 3)
    one = jaxprobe.bootstrap_mean(v[1, 2], key=key, n_boot=50)
    np.testing.assert_allclose(res.replicates[:, 1, 2], one.replicates, rtol=1e-5, atol=1e-6)


def test_batched_cka_bootstrap_is_paired(rng, key):
    X = rng.standard_normal((3, 20, 8)).astype(np.float32)
    Y = rng.standard_normal((20, 8)).astype(np.float32) + X[0]
    res = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=64)
    assert res.replicates.shape == (64, 3)
    one = jaxprobe.bootstrap_cka(X[2], Y, key=key, n_boot=64)
    np.testing.assert_allclose(res.replicates[:, 2], one.replicates, rtol=1e-5)


def test_replicates_independent_of_chunking(rng, key):
    X, Y = _data(rng)
    a = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=100, chunk=7)
    b = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=100, chunk=100)
    np.testing.assert_allclose(a.replicates, b.replicates, rtol=1e-5)
    c = jaxprobe.bootstrap_cka(X, Y, key=key, n_boot=30)  # a prefix of the same replicates
    np.testing.assert_allclose(c.replicates, a.replicates[:30], rtol=1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"n_boot": 0}, r"'n_boot' parameter of bootstrap_cka must be an int in \[1, inf\)\. Got 0"),
        ({"level": 1.0}, r"'level' parameter of bootstrap_cka must be a float in \(0.0, 1.0\)"),
        ({"method": "bc"}, "must be one of"),
        ({"groups": np.zeros(5)}, "1-D array of n = 24 labels"),
        ({"groups": np.zeros(24)}, "single group"),
        ({"hierarchical": True}, "needs 'groups'"),
    ],
)
def test_bad_arguments(rng, key, kw, match):
    X, Y = _data(rng)
    with pytest.raises(ValueError, match=match):
        jaxprobe.bootstrap_cka(X, Y, key=key, **kw)


def _enumerate_resamples(groups, hierarchical):
    """Every count vector a design can draw, by explicit enumeration (tiny designs only)."""
    import itertools

    groups = np.asarray(groups)
    labels = sorted(set(groups.tolist()))
    members = [np.flatnonzero(groups == g) for g in labels]
    n, out = groups.size, set()
    for drawn in itertools.product(range(len(labels)), repeat=len(labels)):
        if not hierarchical:
            c = np.zeros(n, int)
            for g in drawn:
                c[members[g]] += 1
            out.add(tuple(c))
            continue
        per_group = [itertools.product(members[g], repeat=len(members[g])) for g in drawn]
        for rows in itertools.product(*per_group):
            c = np.zeros(n, int)
            for r in rows:
                for i in r:
                    c[i] += 1
            out.add(tuple(c))
    return len(out)


@pytest.mark.parametrize("groups,hier", [([0, 0, 1, 1], False), ([0, 0, 1, 1], True), ([0, 0, 0, 1, 1, 2], True),
                                         ([0, 1, 2, 3], False), ([0, 0, 1, 2, 2], True)])
def test_n_distinct_resamples_matches_enumeration(groups, hier):
    from jaxprobe.bootstrap import n_distinct_resamples

    assert n_distinct_resamples(groups=groups, hierarchical=hier) == _enumerate_resamples(groups, hier)


def test_n_distinct_resamples_iid_and_two_noise_types():
    from jaxprobe.bootstrap import n_distinct_resamples

    assert n_distinct_resamples(3) == 10  # multisets of size 3 from 3
    assert n_distinct_resamples(groups=np.repeat([0, 1], 50)) == 3  # 2 noise types: {aa, ab, bb}
    assert n_distinct_resamples(groups=np.repeat(np.arange(18), 50)) > 10 ** 9  # the paper's 18 noises
