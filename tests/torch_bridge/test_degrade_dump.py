"""The quality stage's enhancement: every mixture through the model's official pipeline (MUSE on
the dump's windows, GTCRN on whole mixtures), one resumable file per utterance; a model without
enhance() is refused."""
import numpy as np
import pytest
from tests.npz import load_npz

pytest.importorskip("pyroomacoustics")
pytestmark = [pytest.mark.shared]

SR = 16000


def test_enhance_sweep_matches_the_official_pipeline(tmp_path):
    from tests.conftest import MUSE_DIR

    if not (MUSE_DIR / "g_best").exists():
        pytest.skip(f"needs {MUSE_DIR}/g_best")
    from torch_bridge.degrade import degradation_sweep
    from torch_bridge.degrade_dump import degradation_items, enhance_sweep
    from torch_bridge import load_model
    from torch_bridge.muse_inference import enhance
    from torch_bridge.mixing import windows

    rng = np.random.default_rng(0)
    t = np.arange(30700) / SR  # one MUSE window exactly: the official pipeline sees the same input
    speech = ((np.sin(2 * np.pi * 3 * t) ** 2) * np.sin(2 * np.pi * 200 * t) + 0.05 * rng.standard_normal(t.size))
    sweep = degradation_sweep({"u0": speech.astype(np.float32)}, {"white": rng.standard_normal(SR * 3).astype(np.float32)},
                              "clipping", [0.5], seed=0, duration=None, noise_snr=10.0)
    items = degradation_items(sweep, window=30700)
    assert [it.condition for it in items] == [{"noise": "clean", "clipping": None}, {"noise": "white", "clipping": 0.5}]
    spec = load_model("muse", str(MUSE_DIR / "g_best"))
    logs = []
    enhance_sweep(spec, sweep, tmp_path, threads=1, log=logs.append)
    z = load_npz(tmp_path / "00000.npz")
    assert z["noisy"].shape == (1, 1, 1, 30700) and z["clean"].shape == (1, 30700)
    mix = sweep[0]
    assert np.array_equal(z["noisy"][0, 0], windows(mix.noisy, size=30700))
    assert np.array_equal(z["clean"], windows(mix.clean, size=30700))
    official = enhance(spec.model, mix.noisy, SR)
    got = z["enhanced"][0, 0, 0]
    assert np.max(np.abs(got - official)) <= 1e-5 * np.max(np.abs(official))
    enhance_sweep(spec, sweep, tmp_path, log=logs.append)
    assert "enhancing 0 of 1 utterances" in logs[-1]


def _sweep(n: int, seed: int = 0):
    from torch_bridge.degrade import degradation_sweep

    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    speech = ((np.sin(2 * np.pi * 3 * t) ** 2) * np.sin(2 * np.pi * 200 * t) + 0.05 * rng.standard_normal(t.size))
    return degradation_sweep({"u0": speech.astype(np.float32)}, {"white": rng.standard_normal(SR * 3).astype(np.float32)},
                             "clipping", [0.5, 0.1], seed=0, duration=None, noise_snr=10.0)


def test_enhance_sweep_runs_gtcrn_on_whole_mixtures(tmp_path):
    from tests.conftest import SHARED

    ckpt = SHARED / "gtcrn" / "model_trained_on_vctk.tar"
    if not ckpt.exists():
        pytest.skip(f"needs {ckpt}")
    from torch_bridge import load_model
    from torch_bridge.degrade_dump import degradation_items, enhance_sweep
    from torch_bridge.models.gtcrn.inference import gtcrn_enhance

    n = SR + 100  # not a multiple of GTCRN's hop: its output is 100 samples shorter
    sweep = _sweep(n)
    assert len(degradation_items(sweep, window=None)) == 1 + 2  # whole mixtures: one item each
    spec = load_model("gtcrn", str(ckpt))
    enhance_sweep(spec, sweep, tmp_path, threads=1)
    z = load_npz(tmp_path / "00000.npz")
    m = n // 256 * 256
    assert z["clean"].shape == (1, m) and z["noisy"].shape == z["enhanced"].shape == (1, 2, 1, m)
    for s, level in enumerate([0.5, 0.1]):
        mix = sweep.mixture("u0", "white", level)
        assert np.array_equal(z["noisy"][0, s, 0], mix.noisy[:m])
        official = gtcrn_enhance(spec.model, mix.noisy)  # the official pipeline, called directly
        assert official.shape == (m,)
        np.testing.assert_allclose(z["enhanced"][0, s, 0], official, rtol=0, atol=1e-5 * np.abs(official).max())
        assert np.abs(z["enhanced"][0, s, 0] - mix.noisy[:m]).max() > 1e-3  # the model changed the mixture
    np.testing.assert_array_equal(z["clean"][0], sweep.mixture("u0", "white", 0.5).clean[:m])


def test_enhance_sweep_refuses_a_model_without_enhance(tmp_path):
    from tests.torch_bridge.test_models_registry import tiny_spec
    from torch_bridge.degrade_dump import enhance_sweep

    spec = tiny_spec()
    assert not spec.enhances
    with pytest.raises(ValueError, match="needs an enhancement model"):
        enhance_sweep(spec, _sweep(SR), tmp_path)
    assert not list(tmp_path.glob("*.npz"))
