"""Group (SNR-level) distances of a top-k diffusion map: from the kept coordinates where the k
computed components hold the energy share, else (t = 1/2) from the all-component closed form;
against the plain float64 eigendecomposition in tests/reference/diffusion_ref.py."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxprobe.diffusion import bootstrap as DB
from jaxprobe.diffusion import diffusion_map, group_membership, intra_layer
from tests.reference import diffusion_ref as ref

S, K, D = 8, 12, 30  # 8 levels x 12 points: n = 96 > 5 (k + 2) for k = 8


def _cloud(rng, d=D):
    snr = np.repeat(np.linspace(-5, 20, S), K)
    X = (rng.normal(size=(1, d)) + np.tanh(snr / 10)[:, None] * rng.normal(size=(1, d))
         + 0.3 * rng.normal(size=(S * K, d)))
    return X, snr


def _reference(X, snr, coordinates="markov"):
    """float64 eigh of every component: (lambda, coordinates with all n - 1 columns, pi, M)."""
    D2 = ref.sq_distance_matrix(X)
    w, psi, coords, pi, _ = ref.diffusion_map(X, ref.median_epsilon(D2), t=0.5)
    if coordinates == "symmetric":
        coords = coords * np.sqrt(pi)[:, None]
    labels = np.unique(snr, return_inverse=True)[1]
    M = np.zeros((S, len(snr)))
    M[labels, np.arange(len(snr))] = 1.0
    return np.clip(w, 0, None), coords, pi, M / M.sum(1, keepdims=True)


def _levels(coords, M, m):
    lc = M @ coords[:, :m]
    return np.sqrt(np.sum((lc[:, None] - lc[None]) ** 2, -1))


def _kept(lam, energy):
    frac = np.cumsum(lam) / lam.sum()
    return int(np.sum(frac < energy * (1 - 1e-6))) + 1


@pytest.mark.parametrize("coordinates", ["markov", "symmetric"])
@pytest.mark.parametrize("energy", [None, 0.99])
def test_closed_form_equals_all_component_reference(x64, rng, coordinates, energy):
    X, snr = _cloud(rng)
    lam, coords, pi, M = _reference(X, snr, coordinates)
    assert energy is None or _kept(lam, energy) > 8  # the top 8 do not hold the share: the closed form serves
    res = intra_layer(X, snr, t=0.5, energy=energy, n_components=8, coordinates=coordinates, solver="lobpcg")
    assert bool(res.maps.group_closed)
    want = _levels(coords, M, len(lam))
    np.testing.assert_allclose(np.asarray(res.level_distances), want, rtol=1e-8, atol=1e-10 * want.max())
    np.testing.assert_allclose(float(res.maps.energy_total), lam.sum(), rtol=1e-10)


def test_closed_form_within_the_stated_bound_of_the_energy_truncated_distances(x64, rng):
    """0 <= D_all^2 - D_kept^2 <= lambda_{m+1} sum_i Delta_i^2 / pi_i for every pair of levels."""
    X, snr = _cloud(rng)
    lam, coords, pi, M = _reference(X, snr)
    m = _kept(lam, 0.99)
    kept = _levels(coords, M, m)
    got = np.asarray(intra_layer(X, snr, t=0.5, energy=0.99, n_components=8, solver="lobpcg").level_distances)
    Delta = M[:, None, :] - M[None, :, :]
    bound = lam[m] * np.sum(Delta ** 2 / pi, -1)
    gap = got ** 2 - kept ** 2
    assert np.all(gap >= -1e-10 * kept.max() ** 2) and np.all(gap <= bound + 1e-10 * kept.max() ** 2)
    assert gap.max() > 0  # the tail is not empty: the test can fail


def test_kept_coordinates_serve_when_the_top_k_hold_the_energy(x64, rng):
    X, snr = _cloud(rng)
    lam, coords, pi, M = _reference(X, snr)
    energy = float(np.cumsum(lam)[3] / lam.sum())  # the rule keeps 4 or 5 <= 8 components
    m = _kept(lam, energy)
    assert m <= 8
    res = intra_layer(X, snr, t=0.5, energy=energy, n_components=8, solver="lobpcg")
    assert not bool(res.maps.group_closed) and int(res.maps.n_kept) == m  # the rule over all n - 1 eigenvalues
    want = _levels(coords, M, m)
    np.testing.assert_allclose(np.asarray(res.level_distances), want, rtol=1e-6, atol=1e-8 * want.max())


def test_float32_krylov_close_to_float64_reference(rng):
    X, snr = _cloud(rng)
    lam, coords, pi, M = _reference(X, snr)
    res = intra_layer(X.astype(np.float32), snr, t=0.5, energy=0.99, n_components=8, solver="krylov")
    assert res.maps.solver == "krylov" and res.level_distances.dtype == np.float32
    want = _levels(coords, M, len(lam))
    assert np.max(np.abs(np.asarray(res.level_distances) - want)) < 1e-3 * want.max()
    dc = np.asarray(res.maps.coords[:, :3], np.float64)  # DC1-DC3 against the reference, signs free
    sgn = np.sign(np.sum(dc * coords[:, :3], 0))
    assert np.max(np.abs(dc * sgn - coords[:, :3])) < 1e-3 * np.abs(coords[:, :3]).max()


def test_no_closed_form_away_from_t_half(x64, rng):
    X, snr = _cloud(rng)
    M = np.asarray(group_membership(np.unique(snr, return_inverse=True)[1], S, np.float64))
    m = diffusion_map(X, t=1.0, energy=0.99, n_components=8, group_means=M, solver="lobpcg")
    assert not bool(m.group_closed)  # distances over the computed components, as before
    lc = M @ np.asarray(m.coords)
    np.testing.assert_allclose(np.asarray(m.group_distances), np.sqrt(np.sum((lc[:, None] - lc[None]) ** 2, -1)),
                               rtol=1e-8, atol=1e-12)


def test_group_means_checked(rng):
    X, _ = _cloud(rng)
    with pytest.raises(ValueError, match="'group_means' parameter of diffusion_map must have shape"):
        diffusion_map(X, n_components=8, group_means=np.ones((3, 5)))
    with pytest.raises(ValueError, match="rows sum to 1"):
        diffusion_map(X, n_components=8, group_means=np.ones((3, X.shape[0])))


@pytest.mark.parametrize("coordinates", ["markov", "symmetric"])
@pytest.mark.parametrize("energy", [0.99, 0.2])
def test_bootstrap_identity_replicate_reproduces_the_full_data_levels(rng, coordinates, energy):
    """A replicate that draws every noise type once and every item once is the full data: its
    level distances (top-k maps; closed form at 0.99, kept coordinates at 0.2) equal the full-data ones."""
    L, Kn, Sn, U, d = 2, 8, 9, 3, 20  # K * S = 72 points > 5 (8 + 2)
    snrs = np.linspace(-5, 20, Sn)
    X = (rng.normal(size=(L, 1, 1, 1, d)) + np.tanh(snrs / 10)[None, None, :, None, None] * rng.normal(size=(L, Kn, 1, 1, d))
         + 0.3 * rng.normal(size=(L, Kn, Sn, U, d))).astype(np.float32)
    C = X.mean(axis=3)
    kw = dict(t=0.5, energy=energy, n_components=8, solver="krylov")
    res = intra_layer(C.reshape(L, Kn * Sn, d), np.tile(snrs, Kn), **kw)
    used = intra_layer(C.reshape(L, Kn * Sn, d), np.tile(snrs, Kn), coordinates=coordinates, **kw)
    pn = intra_layer(C, snrs, t=0.5, energy=energy)
    assert np.all(np.asarray(used.maps.group_closed) == (energy == 0.99))
    index = np.tile(np.arange(Kn), (2, 1))
    weights = np.full((2, Kn, U), 1.0 / U, np.float32)
    rep = DB.intra_replicates(X, index, weights, snrs, res.maps, pn.maps, key=jax.random.key(0),
                              symmetric=coordinates == "symmetric")
    want = np.asarray(used.level_distances)
    assert np.max(np.abs(rep.level_distances[0] - want)) < 1e-4 * want.max()
    from scipy.stats import spearmanr

    dc1 = np.asarray(res.dc1).reshape(L, Kn, Sn)  # DC1 per slot against SNR, as the replicate computes it
    rho = np.array([[spearmanr(snrs, dc1[l, k])[0] for k in range(Kn)] for l in range(L)])
    np.testing.assert_allclose(rep.rho[0], rho, atol=1e-6)
