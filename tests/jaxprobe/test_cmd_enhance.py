"""`jaxprobe enhance`: reads any rate and channel count, writes the input's rate and length."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from jaxprobe import _cmd_enhance, cli


def _run(argv):
    parser = argparse.ArgumentParser()
    _cmd_enhance.add_arguments(parser)
    return _cmd_enhance.main(parser.parse_args(argv))


def test_registered_in_cli():
    assert cli._COMMANDS["enhance"][0] == "jaxprobe._cmd_enhance"


def test_enhance_stereo_22k_file(tmp_path, muse_dir, rng):
    sf = pytest.importorskip("soundfile")
    rate, n = 22050, 11025
    t = np.arange(n) / rate
    speechlike = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    stereo = np.stack([speechlike + 0.05 * rng.standard_normal(n), speechlike + 0.05 * rng.standard_normal(n)], 1)
    src, dst = tmp_path / "noisy.wav", tmp_path / "enhanced.wav"
    sf.write(src, stereo.astype(np.float32), rate, subtype="FLOAT")
    assert _run([str(src), str(dst), "--checkpoint", str(muse_dir / "g_best"), "--threads", "2"]) == 0
    out, out_rate = sf.read(dst, dtype="float32")
    info = sf.info(dst)
    assert out_rate == rate and out.shape == (n,) and info.subtype == "PCM_16"
    assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_silent_input_is_refused(tmp_path, capsys):
    sf = pytest.importorskip("soundfile")
    src = tmp_path / "silent.wav"
    sf.write(src, np.zeros(1600, np.float32), 16000)
    assert cli.main(["enhance", str(src), str(tmp_path / "out.wav")]) == 2
    assert "silent" in capsys.readouterr().err
