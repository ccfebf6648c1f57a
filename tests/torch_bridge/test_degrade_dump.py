"""The quality stage's enhancement: windows of every mixture through MUSE as the official
pipeline enhances them, one resumable file per utterance."""
import numpy as np
import pytest

pytest.importorskip("pyroomacoustics")
pytestmark = [pytest.mark.shared]

SR = 16000


def test_enhance_sweep_matches_the_official_pipeline(tmp_path):
    from tests.conftest import MUSE_DIR

    if not (MUSE_DIR / "g_best").exists():
        pytest.skip(f"needs {MUSE_DIR}/g_best")
    from torch_bridge.degrade import degradation_sweep
    from torch_bridge.degrade_dump import degradation_items, enhance_sweep
    from torch_bridge.dump import muse_dump_model
    from torch_bridge.muse_inference import enhance
    from torch_bridge.mixing import windows

    rng = np.random.default_rng(0)
    t = np.arange(30700) / SR  # one MUSE window exactly: the official pipeline sees the same input
    speech = ((np.sin(2 * np.pi * 3 * t) ** 2) * np.sin(2 * np.pi * 200 * t) + 0.05 * rng.standard_normal(t.size))
    sweep = degradation_sweep({"u0": speech.astype(np.float32)}, {"white": rng.standard_normal(SR * 3).astype(np.float32)},
                              "clipping", [0.5], seed=0, duration=None, noise_snr=10.0)
    items = degradation_items(sweep, window=30700)
    assert [it.condition for it in items] == [{"noise": "clean", "clipping": None}, {"noise": "white", "clipping": 0.5}]
    spec = muse_dump_model(str(MUSE_DIR / "g_best"))
    logs = []
    enhance_sweep(spec.model, "muse", sweep, tmp_path, window=spec.window, prepare=spec.prepare, threads=1,
                  log=logs.append)
    z = np.load(tmp_path / "00000.npz")
    assert z["noisy"].shape == (1, 1, 1, 30700) and z["clean"].shape == (1, 30700)
    mix = sweep[0]
    assert np.array_equal(z["noisy"][0, 0], windows(mix.noisy, size=30700))
    assert np.array_equal(z["clean"], windows(mix.clean, size=30700))
    official = enhance(spec.model, mix.noisy, SR)
    got = z["enhanced"][0, 0, 0]
    assert np.max(np.abs(got - official)) <= 1e-5 * np.max(np.abs(official))
    enhance_sweep(spec.model, "muse", sweep, tmp_path, window=spec.window, prepare=spec.prepare, log=logs.append)
    assert "enhancing 0 of 1 utterances" in logs[-1]
