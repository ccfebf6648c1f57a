"""Speaker model and EER: EER against a hand-worked case, the Gaussian closed form and a
plain float64 loop reference; trials; embedding shapes; a tiny model learns to tell
synthetic 'voices' (pitch and formant differ) apart; save/load; bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from torch_bridge.data.record import AudioRecord
from torch_bridge.models.speaker import (
    SpeakerConfig,
    XVector,
    cosine_scores,
    eer,
    speaker_embeddings,
    load_speaker_model,
    speaker_eer,
    train_speaker_model,
    verification_trials,
)

SR = 16000


def eer_reference(scores, labels) -> float:
    """Plain float64 EER: for every threshold (each distinct score, plus one above all),
    count misses and false alarms with explicit loops; interpolate linearly where the
    miss rate first drops to the false-alarm rate or below."""
    scores = [float(s) for s in scores]
    labels = [int(v) for v in labels]
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    thresholds = [float("inf")] + sorted(set(scores), reverse=True)
    points = []
    for t in thresholds:
        miss = sum(1 for s, y in zip(scores, labels) if y == 1 and s < t)
        fa = sum(1 for s, y in zip(scores, labels) if y == 0 and s >= t)
        points.append((miss / n_pos, fa / n_neg))
    for k in range(1, len(points)):
        (m0, f0), (m1, f1) = points[k - 1], points[k]
        if m1 - f1 <= 0:
            d0, d1 = m0 - f0, m1 - f1
            a = d0 / (d0 - d1) if d0 != d1 else 0.0
            return f0 + a * (f1 - f0)
    raise AssertionError("no crossing")


def test_eer_hand_worked_case():
    # accepting >= 0.6: 1 of 3 targets missed, 1 of 3 non-targets accepted -> EER 1/3 exactly
    assert eer([0.9, 0.7, 0.6, 0.4, 0.3, 0.1], [1, 0, 1, 1, 0, 0]) == pytest.approx(1 / 3)
    assert eer([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 0.0
    assert eer([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0
    assert eer([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0]) == pytest.approx(0.5)


def test_eer_matches_the_gaussian_closed_form():
    # target scores N(d, 1), non-target N(0, 1): EER = Phi(-d/2)
    rng = np.random.default_rng(0)
    for d in (0.5, 1.5, 3.0):
        s = np.r_[rng.normal(d, 1, 20000), rng.normal(0, 1, 20000)]
        y = np.r_[np.ones(20000), np.zeros(20000)]
        assert eer(s, y) == pytest.approx(norm.cdf(-d / 2), abs=0.01)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_matches_the_loop_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=60) + 0.8 * y, 1)  # rounding makes ties
    assert eer(s, y) == pytest.approx(eer_reference(s, y), abs=1e-12)


def test_eer_rejects_bad_inputs():
    with pytest.raises(ValueError, match="target and non-target"):
        eer([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="finite"):
        eer([np.nan, 0.2], [1, 0])
    with pytest.raises(ValueError, match="same shape"):
        eer([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="labels must be 0"):
        eer([0.1, 0.2], [2, 0])


def test_verification_trials_all_pairs_and_balanced():
    spk = ["a", "a", "b", "b", "b", "c"]
    pairs, labels = verification_trials(spk)
    assert pairs.shape == (15, 2) and labels.sum() == 1 + 3
    assert all((spk[i] == spk[j]) == bool(l) for (i, j), l in zip(pairs, labels))
    p2, l2 = verification_trials(spk, n_per_class=3, seed=1)
    assert l2.sum() == 3 and len(l2) == 6
    np.testing.assert_array_equal(p2, verification_trials(spk, n_per_class=3, seed=1)[0])
    with pytest.raises(ValueError, match="two speakers"):
        verification_trials(["a", "b", "c"])


def test_cosine_scores():
    e = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(cosine_scores(e, [[0, 1], [0, 2]]), [1.0, 0.0])
    with pytest.raises(ValueError, match="all zeros"):
        cosine_scores(np.zeros((2, 2)), [[0, 1]])


def _voice(speaker: int, item: int, seconds: float = 0.6) -> np.ndarray:
    """A crude voice: syllables (4 Hz envelope) of a harmonic series whose f0 glides around a
    per-speaker centre (so the harmonics move and survive mean normalisation), shaped by
    one resonance whose centre depends on the speaker, plus a little noise."""
    rng = np.random.default_rng(1000 * speaker + item)
    t = np.arange(int(seconds * SR)) / SR
    f0 = (100.0, 160.0, 250.0)[speaker] * (1 + 0.03 * rng.standard_normal() + 0.08 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formant = (700.0, 1500.0, 2500.0)[speaker]
    x = sum(np.exp(-((k * f0 - formant) / 600.0) ** 2) * np.sin(k * phase + rng.uniform(0, 6)) for k in range(1, 40))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)))
    return (0.1 * x / np.max(np.abs(x)) + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def test_tiny_xvector_learns_synthetic_voices(tmp_path):
    train = [AudioRecord(id=f"{s}-{i}", speaker=f"spk{s}", waveform=_voice(s, i), sample_rate=SR)
             for s in range(3) for i in range(6)]
    cfg = SpeakerConfig(n_speakers=3, n_mels=24, channels=16, stats_channels=32, embed_dim=16)
    path = tmp_path / "xvector.pt"
    model = train_speaker_model(train, steps=20, batch_size=12, crop_seconds=0.4, lr=1e-2, config=cfg, out=path)
    held = [(s, _voice(s, 100 + i)) for s in range(3) for i in range(4)]
    waves, spk = [w for _, w in held], [f"spk{s}" for s, _ in held]
    assert speaker_eer(model, waves, spk) < 0.2
    emb = speaker_embeddings(model, waves)
    assert emb.shape == (12, 16) and emb.dtype == np.float32
    # batching does not change an embedding (eval mode, equal lengths)
    np.testing.assert_allclose(speaker_embeddings(model, waves[:1]), emb[:1], rtol=1e-4, atol=1e-5)
    loaded = load_speaker_model(path)
    np.testing.assert_allclose(speaker_embeddings(loaded, waves), emb, rtol=1e-5, atol=1e-6)
    assert loaded.speakers == ["spk0", "spk1", "spk2"]
    # an existing file is reused, not retrained
    assert train_speaker_model(train, steps=1, config=cfg, out=path).state_dict()["segment.weight"].equal(
        loaded.state_dict()["segment.weight"])


def test_xvector_shapes_and_bad_inputs():
    model = XVector(SpeakerConfig(n_speakers=4, channels=8, stats_channels=8, embed_dim=6)).eval()
    x = torch.randn(3, 8000) * 0.1
    assert model.embed(x).shape == (3, 6) and model(x).shape == (3, 4)
    with pytest.raises(ValueError, match="shape"):
        model.embed(torch.zeros(1, 1, 8000))
    with pytest.raises(ValueError, match="NaN"):
        model.embed(torch.full((1, 8000), float("nan")))
    with pytest.raises(ValueError, match="n_speakers"):
        SpeakerConfig(n_speakers=1)
    with pytest.raises(ValueError, match="at least 2 speakers"):
        train_speaker_model([AudioRecord(id="a", speaker="x", waveform=np.ones(800, np.float32), sample_rate=SR)])
