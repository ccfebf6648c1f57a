"""The SE paper's intra- and inter-layer diffusion analyses."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from jaxprobe import diffusion as dm_mod
from jaxprobe.diffusion import diffusion_map
from jaxprobe.diffusion import inter_layer, intra_layer, intra_layer_by_name

SNR = np.arange(-10.0, 31.0)  # the paper's grid, 41 levels


def _drift(rng, n_layers, snr, d, *, bend=1.0, noise=0.01):
    """Clouds that drift along a smooth 1-D path with SNR, one random embedding per layer."""
    s = (np.asarray(snr) - snr.min()) / np.ptp(snr)
    path = np.stack([s, bend * 0.3 * np.sin(3 * s), bend * 0.2 * s**2], axis=1)
    out = []
    for _ in range(n_layers):
        Q, _ = np.linalg.qr(rng.normal(size=(d, 3)))
        out.append(path @ Q.T + noise * rng.normal(size=(len(s), d)))
    return np.stack(out).astype(np.float32)


def test_intra_layer_dc1_tracks_snr(rng):
    X = _drift(rng, 3, SNR, 64)
    res = intra_layer(X, SNR, n_components=4)
    assert res.dc1.shape == (3, 41) and res.r2.shape == (3,)
    for i in range(3):
        dc1 = np.asarray(res.dc1[i])
        ref_fit = scipy.stats.linregress(SNR, dc1)
        np.testing.assert_allclose(float(res.r2[i]), ref_fit.rvalue**2, rtol=1e-4)
        np.testing.assert_allclose(float(res.slope[i]), ref_fit.slope, rtol=1e-4)
        np.testing.assert_allclose(float(res.spearman[i]), scipy.stats.spearmanr(SNR, dc1).statistic, atol=1e-6)
        assert float(res.spearman[i]) > 0.99  # aligned: DC1 grows with SNR in every layer
        assert float(res.slope[i]) > 0


def test_intra_layer_distances_with_one_point_per_level(rng):
    X = _drift(rng, 2, SNR, 32)
    res = intra_layer(X, SNR, n_components=3)
    C = np.asarray(res.maps.coords, dtype=np.float64)
    D = np.sqrt(((C[:, :, None] - C[:, None, :]) ** 2).sum(-1))
    np.testing.assert_allclose(np.asarray(res.level_distances), D, atol=2e-5)
    np.testing.assert_allclose(np.asarray(res.distance_to_clean), D[:, :, -1], atol=2e-5)
    # cleanest condition is at distance 0 from itself and distance grows away from it
    assert float(np.abs(res.distance_to_clean[:, -1]).max()) < 1e-3
    assert (np.asarray(res.distance_to_clean[:, 0]) > np.asarray(res.distance_to_clean[:, 30])).all()


def test_intra_layer_with_noise_types_averages_levels(rng):
    # 4 noise types x 41 SNRs per layer, noise types shuffled into the point order
    snr = np.tile(SNR, 4)
    perm = rng.permutation(len(snr))
    snr = snr[perm]
    X = _drift(rng, 2, snr, 24, noise=0.02)
    res = intra_layer(X, snr, n_components=3)
    C = np.asarray(res.maps.coords, dtype=np.float64)
    for li in range(2):
        for j, level in enumerate(SNR):
            np.testing.assert_allclose(np.asarray(res.level_coords[li, j]), C[li, snr == level].mean(0), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(res.snr_levels), SNR)


def test_intra_layer_batch_equals_per_layer(rng):
    X = _drift(rng, 3, SNR, 16)
    batched = intra_layer(X, SNR, n_components=3)
    for i in range(3):
        one = intra_layer(X[i], SNR, n_components=3)
        np.testing.assert_allclose(np.asarray(batched.r2[i]), np.asarray(one.r2), atol=1e-6)
        np.testing.assert_allclose(np.asarray(batched.level_distances[i]), np.asarray(one.level_distances), atol=1e-5)


def test_intra_layer_by_name_groups_dimensions(rng):
    A, B = _drift(rng, 2, SNR, 16)
    L = _drift(rng, 1, SNR, 12)[0]
    out = intra_layer_by_name({"enc": A, "latent": L, "dec": B}, SNR, n_components=3)
    assert list(out) == ["enc", "latent", "dec"]
    for name, X in [("enc", A), ("latent", L), ("dec", B)]:
        one = intra_layer(X, SNR, n_components=3)
        np.testing.assert_allclose(np.asarray(out[name].r2), np.asarray(one.r2), atol=1e-6)
        assert out[name].dc1.shape == (41,)
        assert out[name].snr_levels.shape == (41,)


def test_intra_layer_no_recompilation(rng):
    X1, X2 = _drift(rng, 2, SNR, 8), _drift(rng, 2, SNR, 8)
    intra_layer(X1, SNR, n_components=2)
    before = dm_mod.diffusion_map_batched._cache_size()
    intra_layer(X2, SNR, n_components=2)
    assert dm_mod.diffusion_map_batched._cache_size() == before


def test_intra_layer_bad_input(rng):
    X = _drift(rng, 1, SNR, 8)
    with pytest.raises(ValueError, match="'snr'.*shape"):
        intra_layer(X, SNR[:-1])
    with pytest.raises(ValueError, match="at least 3 distinct"):
        intra_layer(X, np.where(SNR > 0, 1.0, 0.0))
    with pytest.raises(ValueError, match="'snr'.*finite"):
        intra_layer(X, np.where(SNR > 0, np.nan, SNR))


# ----------------------------------------------------------------------------- inter-layer


def _layers(rng, S=5, m=3, d=20):
    """Six layers in three blocks; blocks sit apart and drift apart as SNR falls."""
    base = {"enc": 0.0, "dec": 3.0, "ref": 6.0}
    layers, blocks = {}, {}
    for b, off in base.items():
        for j in range(2):
            name = f"{b}.{j}"
            drift = np.linspace(2.0, 0.0, S)[:, None, None] * off / 6.0
            layers[name] = (off + drift + 0.1 * j + 0.05 * rng.normal(size=(S, m, d))).astype(np.float32)
            blocks[name] = b
    return layers, blocks


def test_inter_layer_group_distances_match_numpy(rng):
    layers, blocks = _layers(rng)
    res = inter_layer(layers, blocks=blocks, n_components=4)
    assert res.groups == ("enc", "dec", "ref") and res.excluded == ()
    C = np.asarray(res.maps.coords, dtype=np.float64)  # (S, 18, k)
    labels = np.repeat([0, 0, 1, 1, 2, 2], 3)
    for s in range(5):
        cent = np.stack([C[s, labels == g].mean(0) for g in range(3)])
        np.testing.assert_allclose(np.asarray(res.group_coords[s]), cent, atol=1e-6)
        D = np.sqrt(((cent[:, None] - cent[None]) ** 2).sum(-1))
        np.testing.assert_allclose(np.asarray(res.group_distances[s]), D, atol=1e-5)
    # each SNR's map equals a separate diffusion map of that cloud (one batched call)
    cloud = np.concatenate([layers[n][2] for n in res.layers])
    one = diffusion_map(cloud, n_components=4, align_to=np.repeat(np.arange(6.0), 3))
    np.testing.assert_allclose(np.asarray(res.maps.eigenvalues[2]), np.asarray(one.eigenvalues), atol=1e-6)


def test_inter_layer_layers_as_groups_and_dc1_follows_depth(rng):
    layers, _ = _layers(rng)
    res = inter_layer(layers, n_components=2)
    assert res.groups == res.layers and res.group_distances.shape == (5, 6, 6)
    dc1 = np.asarray(res.group_coords[..., 0])
    assert (dc1[:, -1] > dc1[:, 0]).all()


def test_inter_layer_excludes_other_dimension_with_a_message(rng):
    layers, blocks = _layers(rng)
    layers["latent.0"] = rng.normal(size=(5, 3, 15)).astype(np.float32)
    blocks["latent.0"] = "latent"
    with pytest.warns(UserWarning, match=r"latent\.0 \(d=15\)"):
        res = inter_layer(layers, blocks=blocks, n_components=2)
    assert res.excluded == ("latent.0",) and "latent" not in res.groups


def test_inter_layer_bad_input(rng):
    layers, blocks = _layers(rng)
    with pytest.raises(ValueError, match="missing"):
        inter_layer(layers, blocks={k: v for k, v in list(blocks.items())[1:]})
    layers["enc.0"] = layers["enc.0"][:4]
    with pytest.raises(ValueError, match=r"same \(S, m\)"):
        inter_layer(layers)
    with pytest.raises(ValueError, match="non-empty mapping"):
        inter_layer({})
