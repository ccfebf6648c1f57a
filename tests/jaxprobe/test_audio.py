"""Listening side against torch/torchaudio (2.9) and scipy: filterbank, STFT/iSTFT, mel inversion,
Griffin-Lim, STOI wrapper."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
import torchaudio

import jax
import jax.numpy as jnp

from jaxprobe.audio import (MelConfig, griffin_lim, istft, log_mel_spectrogram, mel_filterbank, mel_to_linear,
                            mel_to_waveform, spectral_convergence, stft, stoi)


def _chirp(n=8000, seed=0, batch=None):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    shape = (batch, n) if batch else (n,)
    f0 = 150 + 100 * rng.random(batch or 1)[:, None]
    x = sum(np.sin(2 * np.pi * k * f0 * t * (1 + 0.5 * t)) / k for k in range(1, 6))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal((batch or 1, n))
    return x.reshape(shape)


@pytest.mark.parametrize("mel_scale", ["htk", "slaney"])
@pytest.mark.parametrize("norm", [None, "slaney"])
@pytest.mark.parametrize("n_freqs,f_min,f_max,n_mels", [(201, 0.0, 8000.0, 80), (257, 20.0, 7600.0, 40)])
def test_filterbank_matches_torchaudio(mel_scale, norm, n_freqs, f_min, f_max, n_mels):
    got = mel_filterbank(n_freqs, f_min, f_max, n_mels, 16000, norm=norm, mel_scale=mel_scale)
    want = torchaudio.functional.melscale_fbanks(n_freqs, f_min, f_max, n_mels, 16000, norm=norm,
                                                 mel_scale=mel_scale).numpy()
    assert got.shape == want.shape == (n_freqs, n_mels)
    # torchaudio builds the bank in float32: agreement to float32 rounding of Hz-scale slopes
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * want.max())


def test_filterbank_errors():
    with pytest.raises(ValueError, match="'norm' parameter of mel_filterbank"):
        mel_filterbank(201, 0, 8000, 80, 16000, norm="area")
    with pytest.raises(ValueError, match="f_min < f_max"):
        mel_filterbank(201, 9000, 8000, 80, 16000)


@pytest.mark.parametrize("n_fft,hop,win", [(400, 160, None), (512, 128, 400), (400, 100, 320)])
def test_stft_istft_match_torch(x64, n_fft, hop, win):
    x = _chirp(4001, batch=3)
    S = np.asarray(stft(x, n_fft=n_fft, hop_length=hop, win_length=win))
    w = torch.hann_window(win or n_fft, dtype=torch.float64)
    St = torch.stft(torch.from_numpy(x), n_fft, hop, win, window=w, center=True, pad_mode="reflect",
                    return_complex=True).numpy()
    np.testing.assert_allclose(S, np.swapaxes(St, -1, -2), rtol=0, atol=1e-10)
    for length in (None, 4001, 4200):
        try:
            yt = torch.istft(torch.from_numpy(St), n_fft, hop, win, window=w, length=length).numpy()
        except RuntimeError:  # torch refuses a zero window envelope (win < n_fft, padded end): so do we
            with pytest.raises(ValueError, match="window envelope is zero"):
                istft(S, n_fft=n_fft, hop_length=hop, win_length=win, length=length)
            continue
        y = np.asarray(istft(S, n_fft=n_fft, hop_length=hop, win_length=win, length=length))
        assert y.shape == yt.shape
        np.testing.assert_allclose(y, yt, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.asarray(istft(S, n_fft=n_fft, hop_length=hop, win_length=win, length=4001)), x,
                               atol=1e-10)


@pytest.mark.parametrize("batch", [1, 3])
def test_stft_batch_consistency_and_dtype(batch):
    x = _chirp(3000, batch=batch).astype(np.float32)
    S = stft(x)
    assert S.dtype == jnp.complex64
    np.testing.assert_allclose(S, jnp.stack([stft(x[i]) for i in range(batch)]), atol=1e-4)
    assert istft(S, length=3000).dtype == jnp.float32


def test_stft_errors():
    with pytest.raises(ValueError, match="longer than n_fft // 2"):
        stft(np.zeros(100), n_fft=400)
    with pytest.raises(ValueError, match=r"must have shape \(\.\.\., T, 201\)"):
        istft(jnp.zeros((10, 200), jnp.complex64), n_fft=400)
    with pytest.raises(ValueError, match="window envelope is zero"):
        istft(jnp.zeros((10, 201), jnp.complex64), n_fft=400, hop_length=400, window=np.hanning(400))


def test_mel_config_from_front_end_settings():
    settings = {"sample_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 80,
                "f_min": 0.0, "f_max": 8000.0, "power": 2.0, "mel_scale": "htk", "norm": None, "log": "natural",
                "log_floor": 1e-6}
    cfg = MelConfig.from_settings(settings)
    assert cfg.n_fft == 512 and cfg.win_length == 400 and cfg.log_offset == 1e-6 and cfg.n_freqs == 257
    with pytest.raises(ValueError, match="natural-log"):
        MelConfig.from_settings({**settings, "log": "log10"})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['top_db'\]"):
        MelConfig.from_settings({**settings, "top_db": 80})


@pytest.mark.parametrize("cfg", [MelConfig(), MelConfig(n_fft=512, win_length=400)])
def test_log_mel_matches_torchaudio(cfg):
    x = _chirp(8000, batch=2).astype(np.float32)
    got = np.asarray(log_mel_spectrogram(x, cfg))
    ta = torchaudio.transforms.MelSpectrogram(**cfg.torchaudio_kwargs())
    want = torch.log(ta(torch.from_numpy(x)) + cfg.log_offset).numpy()
    np.testing.assert_allclose(got, np.swapaxes(want, -1, -2), rtol=0, atol=2e-3)


@pytest.mark.parametrize("momentum", [0.99, 0.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_griffin_lim_matches_torchaudio(momentum, dtype, x64):
    """Same zero initial phase (rand_init=False), 32 iterations: waveforms agree to 1e-3 relative
    (float32 FFT rounding grows over the iterations) and spectral convergence to 1e-5."""
    x = _chirp(8000, batch=2).astype(dtype)
    S = np.abs(np.asarray(stft(x))) ** 2
    y = griffin_lim(S, power=2.0, n_iter=32, momentum=momentum, length=8000)
    assert y.dtype == dtype and y.shape == (2, 8000)
    gl = torchaudio.transforms.GriffinLim(n_fft=400, hop_length=160, win_length=400, power=2.0, n_iter=32,
                                          momentum=momentum, rand_init=False, length=8000)
    yt = gl.to(torch.float64 if dtype == np.float64 else torch.float32)(
        torch.from_numpy(np.swapaxes(S, -1, -2).copy())).numpy()
    y = np.asarray(y)
    rel = np.linalg.norm(y - yt, axis=-1) / np.linalg.norm(yt, axis=-1)
    assert np.all(rel < 1e-3), rel
    sc, sct = spectral_convergence(y, S, power=2.0), spectral_convergence(yt, S, power=2.0)
    np.testing.assert_allclose(sc, sct, atol=1e-5)
    assert np.all(np.asarray(sc) < 0.3)


@pytest.mark.parametrize("batch", [1, 3])
def test_griffin_lim_batch_consistency(batch):
    S = np.abs(np.asarray(stft(_chirp(4000, batch=batch).astype(np.float32))))
    y = griffin_lim(S, n_iter=30)
    want = jnp.stack([griffin_lim(S[i], n_iter=30) for i in range(batch)])
    # float32 FFT rounding differs with the batch layout and grows over 30 iterations: compare norms
    rel = np.linalg.norm(np.asarray(y - want), axis=-1) / np.linalg.norm(np.asarray(want), axis=-1)
    assert y.shape == want.shape and np.all(rel < 1e-3), rel


def test_griffin_lim_errors_and_random_init(key):
    S = np.abs(np.asarray(stft(_chirp(4000).astype(np.float32))))
    with pytest.raises(ValueError, match="needs a PRNG 'key'"):
        griffin_lim(S, init="random")
    with pytest.raises(ValueError, match=r"'momentum' parameter of griffin_lim must be a float in \[0, 1\)"):
        griffin_lim(S, momentum=1.0)
    with pytest.raises(ValueError, match="transpose torchaudio's layout"):
        griffin_lim(S.T)
    with pytest.raises(ValueError, match="non-negative"):
        griffin_lim(-S)
    a, b = griffin_lim(S, init="random", key=key), griffin_lim(S, init="random", key=key)
    np.testing.assert_array_equal(a, b)
    assert float(spectral_convergence(a, S)) < 0.3


def test_mel_to_linear_pinv_matches_inverse_mel_scale():
    """torchaudio 2.9's InverseMelScale is relu(lstsq(fb.T, mel)); the default 80-band bank is rank
    deficient, so compare with the rank-revealing 'gelsd' driver (its default 'gels' refuses it)."""
    cfg = MelConfig()
    x = _chirp(8000, batch=2).astype(np.float32)
    mel = np.abs(np.asarray(stft(x))) ** 2 @ cfg.filterbank().astype(np.float32)
    inv = torchaudio.transforms.InverseMelScale(cfg.n_freqs, cfg.n_mels, cfg.sample_rate, driver="gelsd")
    want = np.swapaxes(inv(torch.from_numpy(np.swapaxes(mel, -1, -2).copy())).numpy(), -1, -2)
    got = np.asarray(mel_to_linear(mel, cfg.filterbank(), method="pinv"))
    assert got.shape == (2, 51, 201) and got.dtype == np.float32
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_mel_to_linear_nnls_matches_scipy(x64):
    cfg = MelConfig(n_fft=256, win_length=256, n_mels=24)
    fb = cfg.filterbank()
    rng = np.random.default_rng(0)
    mel = rng.random((3, 4, 24)) ** 2
    got = np.asarray(mel_to_linear(mel, fb, method="nnls", n_iter=3000))
    pinv = np.asarray(mel_to_linear(mel, fb, method="pinv"))
    assert np.all(got >= 0)
    for t in np.ndindex(3, 4):
        s_ref, res_ref = scipy.optimize.nnls(fb.T, mel[t])
        res = np.linalg.norm(got[t] @ fb - mel[t])
        assert res <= res_ref * (1 + 1e-4) + 1e-9, (t, res, res_ref)
        assert res <= np.linalg.norm(pinv[t] @ fb - mel[t]) + 1e-12
    with pytest.raises(ValueError, match=r"'fb' parameter of mel_to_linear must have shape \(n_freqs, 24\)"):
        mel_to_linear(mel, fb[:, :20])
    bad_mel, bad_fb = mel.copy(), fb.copy()
    bad_mel[1, 2], bad_fb[3, 4] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"'mel' parameter of mel_to_linear must be finite"):
        mel_to_linear(bad_mel, fb)
    with pytest.raises(ValueError, match=r"'fb' parameter of mel_to_linear must be finite"):
        mel_to_linear(mel, bad_fb)


def test_mel_to_linear_inverts_each_filterbank_once():
    """The pseudo-inverse (and the NNLS step's Lipschitz constant) is computed once per filterbank
    and rcond, and is numpy's pinv exactly: a listening stage inverts every layer with one bank."""
    from jaxprobe.audio.mel import _pinv_and_lipschitz

    cfg = MelConfig(n_fft=256, win_length=256, n_mels=24)
    fb = cfg.filterbank()
    mel = np.random.default_rng(0).random((2, 5, 24)).astype(np.float32)
    _pinv_and_lipschitz.cache_clear()
    a = np.asarray(mel_to_linear(mel, fb))
    b = np.asarray(mel_to_linear(mel, fb.copy()))  # an equal bank, another array: the same entry
    c = np.asarray(mel_to_linear(mel, fb, rcond=1e-3))  # another cut-off: its own entry
    info = _pinv_and_lipschitz.cache_info()
    assert (info.hits, info.misses) == (1, 2)
    np.testing.assert_array_equal(a, b)
    pinv, lip = _pinv_and_lipschitz(fb.tobytes(), fb.shape, 1e-5)
    np.testing.assert_array_equal(pinv, np.linalg.pinv(fb, rcond=1e-5))
    assert lip == float(np.linalg.norm(fb, 2) ** 2) and c.shape == a.shape


def test_mel_to_waveform_roundtrip_and_stoi():
    cfg = MelConfig()
    x = _chirp(16000, batch=2).astype(np.float32)
    y = np.asarray(mel_to_waveform(log_mel_spectrogram(x, cfg), cfg, n_iter=32, length=16000))
    assert y.shape == x.shape
    sc = spectral_convergence(y, np.abs(np.asarray(stft(x))))
    assert np.all(np.asarray(sc) < 0.5)
    from pystoi import stoi as pystoi

    got = stoi(x, y)
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [pystoi(x[i].astype(np.float64), y[i].astype(np.float64), 16000)
                                     for i in range(2)], rtol=0, atol=1e-3)
    np.testing.assert_allclose(stoi(x, x), 1.0, atol=1e-5)


def _speechlike(n, rng):
    """Harmonic bursts with pauses (so silent-frame removal drops frames) plus a noise floor."""
    t = np.arange(n) / 16000
    f0 = 120 + 80 * rng.random()
    x = sum(np.sin(2 * np.pi * k * f0 * t * (1 + 0.2 * t)) / k for k in range(1, 8))
    gate = (np.sin(2 * np.pi * (1.5 + rng.random()) * t + rng.random() * 6) > -0.2)
    return x * gate + 1e-3 * rng.standard_normal(n)


@pytest.mark.parametrize("fs", [16000, 10000])
def test_stoi_matches_pystoi(fs):
    """The JAX STOI (float32) against pystoi (float64) to 1e-3 over noise levels, including
    signals whose silent-frame removal keeps different numbers of frames in one batch."""
    from pystoi import stoi as pystoi

    rng = np.random.default_rng(5)
    n = int(1.6 * fs)
    clean = np.stack([_speechlike(n, rng) for _ in range(6)])
    noisy = clean + np.array([0.02, 0.1, 0.3, 0.6, 1.0, 2.0])[:, None] * rng.standard_normal(clean.shape)
    clean, noisy = clean.astype(np.float32), noisy.astype(np.float32)
    got = stoi(clean.reshape(2, 3, n), noisy.reshape(2, 3, n), sample_rate=fs)
    want = np.array([pystoi(c.astype(np.float64), d.astype(np.float64), fs) for c, d in zip(clean, noisy)])
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.reshape(-1), want, rtol=0, atol=1e-3)
    assert want.max() - want.min() > 0.3  # the noise levels really span the measure
    # batch consistency: one at a time equals the batch
    np.testing.assert_allclose([stoi(c, d, sample_rate=fs) for c, d in zip(clean, noisy)], got.reshape(-1),
                               atol=1e-6)


def test_stoi_extended_and_errors():
    from pystoi import stoi as pystoi

    rng = np.random.default_rng(6)
    x = _speechlike(16000, rng)
    y = x + 0.3 * rng.standard_normal(x.shape)
    np.testing.assert_allclose(stoi(x, y, extended=True), pystoi(x, y, 16000, extended=True), atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        stoi(x, y[:-1])
    with pytest.raises(ValueError, match="silent"):
        stoi(np.zeros_like(x), y)
    with pytest.raises(ValueError, match="too short"):
        stoi(x[:3000], y[:3000])
    burst = np.zeros(16000)
    burst[8000:8400] = x[8000:8400]
    with pytest.raises(ValueError, match="after silent-frame removal"):
        stoi(burst, burst + 1e-3)


def test_import_pulls_neither_torch_nor_pystoi():
    import subprocess
    import sys

    code = ("import sys, jaxprobe.probe, jaxprobe.audio; "
            "sys.exit(('torch' in sys.modules) * 1 + ('pystoi' in sys.modules) * 2)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
