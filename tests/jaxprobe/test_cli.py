"""The `jaxprobe` command: a user's mistake is one line on stderr and exit code 2, checked
before any work; a bug is a traceback and a request to report it; JAXPROBE_DEBUG=1 shows
the traceback always; every subcommand explains itself."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxprobe import cli
from jaxprobe.studies.sweep.config import ConfigError, load_sweep_config
from jaxprobe.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _one_error_line(err: str, prog: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"jaxprobe {prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_model(monkeypatch):
    """Every way the sweep could reach the model or the dump fails the test loudly."""
    import torch_bridge.dump as dump

    def never(*a, **k):
        raise AssertionError("the model/dump stage was reached")

    monkeypatch.setattr(dump, "muse_dump_model", never)
    monkeypatch.setattr(dump, "dump_snr_sweep", never)
    monkeypatch.setattr(dump, "run_dump", never)
    import jaxprobe.studies.sweep.runner as sweep

    monkeypatch.setattr(sweep, "_dump_stage", never)
    monkeypatch.setattr(sweep, "_load_data", never)


def _toml(tmp_path, text: str) -> str:
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return str(p)


# every value the issue found accepted, misread or reported late, and a few more
BAD_SWEEP = [
    ("[sweep]\nsnrs = []", "'sweep.snrs' must hold at least one SNR; got \\[\\]"),
    ("[sweep]\nsnrs = [-5, 0, 5]\n[diffusion]\ninter_snrs = [-5, 99]", "'diffusion.inter_snrs'.*\\[99\\] not on the grid"),
    ("[cka]\npoor_fit_r2 = 5", "'cka.poor_fit_r2' must be an R\\^2 threshold in \\[0, 1\\]; got 5"),
    ('[data]\nspeech_split = "bogus"', "'data.speech_split' must be one of .*got 'bogus'"),
    ("[data]\nutterances = -1", "'data.utterances' must be an int >= 0.*got -1"),
    ("[data]\nduration = -5", "'data.duration' must be a length in seconds >= 1.919.*got -5"),
    ('[sweep]\nsnrs = ["a"]', "'sweep.snrs' must be a list of numbers.*'a'"),
    ("[sweep]\nsnrs = [0, 5, 5]", "'sweep.snrs' must not repeat a value; 5"),
    ("[diffusion]\nalpha = 3.0", "'diffusion.alpha' must be a number in \\[0, 1\\]; got 3.0"),
    ("[diffusion]\nt_inter = -1.0", "'diffusion.t_inter' must be a diffusion time > 0"),
    ('[diffusion]\nepsilon = "wide"', "'diffusion.epsilon' must be 'median', 'bgh' or a number"),
    ('[data]\nnoises = ["babble", "nope"]', "'data.noises' must name noise types of the embedded corpus.*'nope'"),
    ('[compute]\ndevices = "99"', "'compute.devices' \\(--devices\\) asks for 99 devices; JAX sees"),
    ("[cka]\nlevel = 1.5", "'cka.level' must be in \\(0, 1\\); got 1.5"),
    ("[model]\nbatch_size = -1", "'model.batch_size' must be an int >= 0 \\(0 = the model's own\\); got -1"),
    ('[report]\nformats = ["pdf"]', "'report.formats' must be a list that includes 'png'"),
]


@pytest.mark.parametrize("text,match", BAD_SWEEP, ids=[m[:24] for _, m in BAD_SWEEP])
def test_bad_sweep_config_fails_before_the_model(tmp_path, capsys, no_model, text, match):
    import re

    t0 = time.perf_counter()
    rc = cli.main(["sweep", "--config", _toml(tmp_path, text), "--out", str(tmp_path / "run")])
    elapsed = time.perf_counter() - t0
    line = _one_error_line(capsys.readouterr().err, "sweep")
    assert rc == 2
    assert re.search(match, line), line
    assert elapsed < 30, f"{elapsed:.1f} s to refuse a bad config"  # seconds, not the model's minutes


def test_bad_devices_argument_fails_before_the_model(tmp_path, capsys, no_model):
    assert cli.main(["sweep", "--config", "demo", "--devices", "3x", "--out", str(tmp_path / "r")]) == 2
    assert "'compute.devices' must be 'all' or a device count" in _one_error_line(capsys.readouterr().err, "sweep")


def test_unwritable_out_fails_before_the_model(tmp_path, capsys, no_model):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli.main(["sweep", "--config", "demo", "--out", str(blocker / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err, "sweep")
    assert "--out" in line and "cannot be written" in line


def test_missing_checkpoint_fails_before_the_model(tmp_path, capsys, no_model):
    assert cli.main(["sweep", "--config", "demo", "--checkpoint", str(tmp_path / "nope"),
                     "--out", str(tmp_path / "r")]) == 2
    assert "--checkpoint" in _one_error_line(capsys.readouterr().err, "sweep")


def test_bad_hear_config_fails_before_training(tmp_path, capsys, monkeypatch):
    import torch_bridge.hear as th

    def never(*a, **k):
        raise AssertionError("training was reached")

    monkeypatch.setattr(th, "run_jobs", never)
    for text, match in [('[conditions]\nnoises = ["nope"]', "'conditions.noises' must name noise types"),
                        ("[report]\nfig3_snr = 7.0", "'report.fig3_snr' must be one of conditions.snrs"),
                        ('[compute]\ndevices = "64"', "asks for 64 devices")]:
        assert cli.main(["hear", "--config", _toml(tmp_path, text), "--out", str(tmp_path / "h")]) == 2
        assert match in _one_error_line(capsys.readouterr().err, "hear")


def test_explicit_values_are_kept_and_defaults_follow_the_grid():
    cfg = load_sweep_config({"sweep": {"snrs": [-5, 0, 5, 15]}})
    assert cfg["diffusion"]["inter_snrs"] == [-5, 0]  # the default Fig. 5 SNRs on this grid
    cfg = load_sweep_config({"sweep": {"snrs": [1, 2, 3]}})
    assert cfg["diffusion"]["inter_snrs"] == [1, 2, 3]  # none of them: spread over the grid
    with pytest.raises(ConfigError, match="'sweep.snr_min' <= 'sweep.snr_max'"):
        load_sweep_config({"sweep": {"snr_min": 5, "snr_max": 0}})
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)


# ----------------------------------------------------------------------------- dump and audio

def _noise_dir(tmp_path, rng):
    import soundfile as sf

    d = tmp_path / "noises"
    d.mkdir()
    sf.write(d / "hiss.wav", (0.1 * rng.standard_normal(48000)).astype(np.float32), 16000)
    return d


def _speech_dir(tmp_path, name, write):
    d = tmp_path / name
    d.mkdir()
    write(d)
    return d


def _dump(tmp_path, data, noises, *extra):
    return cli.main(["dump", "--data", str(data), "--noises", str(noises), "--snrs=0,5",
                     "--out", str(tmp_path / "store"), "--quiet", *extra])


@pytest.fixture
def no_dump_model(monkeypatch):
    def never(*a, **k):
        raise AssertionError("the model was loaded")

    import torch_bridge.models.registry as registry

    monkeypatch.setattr(registry, "load_model", never)


def test_dump_user_errors_are_one_line(tmp_path, capsys, rng, no_dump_model):
    import soundfile as sf

    noises = _noise_dir(tmp_path, rng)
    stereo = _speech_dir(tmp_path, "stereo", lambda d: sf.write(
        d / "a.wav", (0.1 * rng.standard_normal((40000, 2))).astype(np.float32), 16000))
    garbage = _speech_dir(tmp_path, "garbage", lambda d: (d / "a.wav").write_bytes(b"RIFF\x00not audio at all"))
    empty = _speech_dir(tmp_path, "empty", lambda d: (d / "notes.txt").write_text("no audio here"))
    for data, match in [(stereo, "2 channels where mono is expected"), (garbage, "Cannot read audio file"),
                        (empty, "found no audio files"), (tmp_path / "missing", "is not a folder")]:
        assert _dump(tmp_path, data, noises) == 2
        assert match in _one_error_line(capsys.readouterr().err, "dump")
    good = _speech_dir(tmp_path, "good", lambda d: sf.write(
        d / "a.wav", (0.1 * rng.standard_normal(40000)).astype(np.float32), 8000))  # any rate: resampled
    assert _dump(tmp_path, good, noises, "--noise-types", "nope") == 2
    assert "Unknown noise type(s) ['nope']" in _one_error_line(capsys.readouterr().err, "dump")


def test_dump_and_train_asr_check_out_first(tmp_path, capsys, no_dump_model):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert cli.main(["dump", "--out", str(blocker / "store"), "--quiet"]) == 2
    assert "--out" in _one_error_line(capsys.readouterr().err, "dump")
    assert cli.main(["train-asr", "--out", str(blocker / "asr")]) == 2
    assert "cannot be written" in _one_error_line(capsys.readouterr().err, "train-asr")


@pytest.mark.parametrize("argv,match", [(["--utterances", "-1"], "--utterances: must be an int >= 1; got '-1'"),
                                        (["--utterances", "0"], "--utterances: must be an int >= 1"),
                                        (["--duration", "-5"], "--duration: must be a number of seconds > 0"),
                                        (["--snrs=0,5,0"], "--snrs must not repeat an SNR")])
def test_dump_arguments_are_checked_by_the_parser(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as ex:
        cli.main(["dump", "--out", str(tmp_path / "s"), *argv])
    assert ex.value.code == 2
    assert match in capsys.readouterr().err


def test_run_dump_refuses_a_negative_count(tmp_path, no_dump_model):
    from torch_bridge.dump import run_dump

    with pytest.raises(ValueError, match="'utterances' parameter of run_dump must be an int in \\[1, inf\\)"):
        run_dump(model="muse", data=str(tmp_path), out=str(tmp_path / "s"), snrs=[0], utterances=-1)


# ----------------------------------------------------------------------------- enhance

def test_enhance_checks_the_output_before_the_model(tmp_path, capsys, monkeypatch, rng):
    import soundfile as sf

    import torch_bridge.muse_inference as te

    monkeypatch.setattr(te, "load_muse", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))
    src = tmp_path / "in.wav"
    sf.write(src, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    for out, match in [(tmp_path / "no_such_dir" / "o.wav", "does not exist"),
                       (tmp_path / "o.xyz", "not an audio format"), (tmp_path, "it is a folder")]:
        assert cli.main(["enhance", str(src), str(out)]) == 2
        assert match in _one_error_line(capsys.readouterr().err, "enhance")
    garbage = tmp_path / "g.wav"
    garbage.write_bytes(b"\x00\x01garbage")
    assert cli.main(["enhance", str(garbage), str(tmp_path / "o.wav")]) == 2
    assert "Cannot read" in _one_error_line(capsys.readouterr().err, "enhance")


def test_wrong_checkpoint_gives_command_line_advice(tmp_path, capsys, rng):
    import soundfile as sf

    src, bad = tmp_path / "in.wav", tmp_path / "g_best"
    sf.write(src, (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    bad.write_bytes(b"not the checkpoint")
    assert cli.main(["enhance", str(src), str(tmp_path / "o.wav"), "--checkpoint", str(bad)]) == 2
    line = _one_error_line(capsys.readouterr().err, "enhance")
    assert "has sha256" in line and "--checkpoint PATH" in line


# ----------------------------------------------------------------------------- bugs and debugging

def test_a_bug_prints_a_traceback_and_asks_for_a_report(tmp_path, capsys, monkeypatch):
    import jaxprobe.studies.sweep as sweep

    monkeypatch.setattr(sweep, "run", lambda *a, **k: 1 / 0)
    assert cli.main(["sweep", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError" in err
    assert "this is a bug in jaxprobe" in err.splitlines()[-1] and "report" in err.splitlines()[-1]


def test_a_plain_value_error_is_a_bug_not_a_user_error(tmp_path, capsys, monkeypatch):
    import jaxprobe.studies.sweep as sweep

    def boom(*a, **k):
        raise ValueError("The 'X' parameter of f must be ...")  # a validator deep inside: our bug

    monkeypatch.setattr(sweep, "run", boom)
    assert cli.main(["sweep", "--out", str(tmp_path)]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys, monkeypatch, no_model):
    monkeypatch.setenv("JAXPROBE_DEBUG", "1")
    assert cli.main(["sweep", "--config", _toml(tmp_path, "[cka]\npoor_fit_r2 = 5"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ConfigError" in err
    assert err.splitlines()[-1].startswith("jaxprobe sweep: error: Configuration key 'cka.poor_fit_r2'")


def test_real_process_exit_code_and_stderr(tmp_path):
    bad = _toml(tmp_path, "[sweep]\nsnrs = [0, 0]")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("JAXPROBE_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "jaxprobe.cli", "sweep", "--config", bad, "--out", str(tmp_path / "r")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "'sweep.snrs' must not repeat a value" in p.stderr
    assert not (tmp_path / "r" / "store").exists()


# ----------------------------------------------------------------------------- help

def test_help_opens_for_users_and_every_command_documents_itself(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    first = top.split("\n\n")[1]
    assert first.startswith("Probe what the layers of a speech model represent")
    assert "nothing more" not in top and "jaxprobe demo" in top
    for name in cli._COMMANDS:
        with pytest.raises(SystemExit):
            cli.main([name, "--help"])
        text = capsys.readouterr().out
        assert "example" in text and "outputs" in text, name
        assert len(text.split("\n\n")[1]) > 80, name  # a description, not the one-line help


def test_every_command_runs_with_freed_memory_retained(tmp_path, capsys, monkeypatch, no_model):
    """The CLI is the application, so it sets the process-wide allocator option (glibc keeps
    freed memory: no page faults for a forward pass's temporaries, bench/bench_retain.py) once,
    before the command runs, and the command's outcome is unchanged."""
    import torch_bridge.runtime as runtime

    calls = []
    monkeypatch.setattr(runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    assert cli.main(["sweep", "--config", _toml(tmp_path, "[cka]\nlevel = 1.5"), "--out", str(tmp_path / "r")]) == 2
    assert calls == [1]
    _one_error_line(capsys.readouterr().err, "sweep")
