"""`jaxprobe enhance --model gtcrn|gtcrn:dns3`: the official GTCRN pipeline from the command line."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from jaxprobe import _cmd_enhance
from tests.conftest import SHARED

GTCRN_DIR = SHARED / "gtcrn"


def _run(argv):
    parser = argparse.ArgumentParser()
    _cmd_enhance.add_arguments(parser)
    return _cmd_enhance.main(parser.parse_args(argv))


@pytest.fixture
def golden():
    if not (GTCRN_DIR / "golden_case1.npz").exists():
        pytest.skip(f"needs {GTCRN_DIR} (../shared is absent on this machine)")
    with np.load(GTCRN_DIR / "golden_case1.npz") as g:
        return g["wave"], g["enhanced"]


def test_gtcrn_file_matches_the_official_output(tmp_path, golden, monkeypatch):
    sf = pytest.importorskip("soundfile")
    wave, enhanced = golden
    src, dst = tmp_path / "noisy.wav", tmp_path / "enhanced.wav"
    sf.write(src, wave[:16100], 16000, subtype="FLOAT")
    monkeypatch.setenv("JAXPROBE_GTCRN_CHECKPOINT", str(GTCRN_DIR / "model_trained_on_vctk.tar"))
    assert _run(["--model", "gtcrn", str(src), str(dst), "--subtype", "FLOAT"]) == 0
    out, rate = sf.read(dst, dtype="float32")
    # official length 256 * (16100 // 256) = 15872. Frames 0..61 read only samples < 15872, as in
    # the 2 s golden input, and the model is causal, so the output before frame 62's first sample
    # (15616) is the golden enhanced waveform's; frame 62 sees the end's reflect padding.
    assert rate == 16000 and out.shape == (15872,)
    n = 15616
    assert np.abs(out[:n] - enhanced[:n]).max() <= 1e-4 * np.abs(enhanced).max()


def test_gtcrn_dns3_at_another_rate_with_explicit_checkpoint(tmp_path, golden):
    sf = pytest.importorskip("soundfile")
    import torch
    import torchaudio.functional as AF

    wave22 = AF.resample(torch.from_numpy(golden[0][:16000]), 16000, 22050).numpy()
    src, dst = tmp_path / "noisy.wav", tmp_path / "enhanced.wav"
    sf.write(src, np.stack([wave22, wave22], 1), 22050, subtype="FLOAT")
    ckpt = str(GTCRN_DIR / "model_trained_on_dns3.tar")
    assert _run(["--model", "gtcrn:dns3", "--checkpoint", ckpt, str(src), str(dst), "--threads", "1"]) == 0
    out, rate = sf.read(dst, dtype="float32")
    assert rate == 22050 and sf.info(dst).subtype == "PCM_16"
    assert abs(len(out) - 15872 * 22050 / 16000) <= 1 and np.isfinite(out).all() and np.abs(out).max() > 0


def test_wrong_checkpoint_for_the_variant_is_refused(tmp_path, golden):
    sf = pytest.importorskip("soundfile")
    from torch_bridge.weights import ChecksumError

    src = tmp_path / "noisy.wav"
    sf.write(src, golden[0][:4000], 16000)
    with pytest.raises(ChecksumError, match="GTCRN \\(dns3\\)"):
        _run(["--model", "gtcrn:dns3", "--checkpoint", str(GTCRN_DIR / "model_trained_on_vctk.tar"),
              str(src), str(tmp_path / "out.wav")])


def test_unknown_model_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        _run(["--model", "gtcrn:libri", "a.wav", "b.wav"])
    assert "gtcrn:dns3" in capsys.readouterr().err
