"""Dataset readers on small fixture trees built in tmp_path, in each dataset's layout."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from torch_bridge.data import (
    AudioError,
    AudioFolder,
    AudioRecord,
    Demand,
    LibriSpeech,
    Musan,
    VoiceBank,
    read_audio,
)

SR = 16000


def tone(seconds: float, rate: int, f: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * f * t)
    if channels > 1:
        x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    return x


def write(path, x, rate, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, rate, **kw)
    return path


def check_record(r: AudioRecord):
    assert isinstance(r, AudioRecord)
    assert r.sample_rate == SR and r.waveform.dtype == np.float32 and r.waveform.ndim == 1
    assert np.isfinite(r.waveform).all() and np.any(r.waveform)


# ---------------------------------------------------------------------------- readers

def test_voicebank_16k_48k_and_transcripts(tmp_path):
    root = tmp_path / "clean_testset_wav"
    write(root / "p232_001.wav", tone(0.5, 48000), 48000)
    write(root / "p232_002.wav", tone(0.5, 16000), 16000)
    write(root / "p257_001.wav", tone(0.5, 48000, 300), 48000)
    txt = tmp_path / "testset_txt"
    txt.mkdir()
    for s in ("p232_001", "p232_002", "p257_001"):
        (txt / f"{s}.txt").write_text(f"Text of {s}.\n")
    ds = VoiceBank(root, transcripts=txt)
    assert ds.ids == ["p232_001", "p232_002", "p257_001"]
    recs = list(ds)
    for r in recs:
        check_record(r)
        assert r.waveform.shape == (SR // 2,)
    assert recs[0].speaker == "p232" and recs[0].transcript == "Text of p232_001."
    # resampled 48 kHz matches torchaudio's resampler applied by hand
    ref = AF.resample(torch.from_numpy(sf.read(str(root / "p232_001.wav"))[0]), 48000, SR).numpy()
    np.testing.assert_allclose(recs[0].waveform, ref, atol=1e-6)
    assert VoiceBank(root, speakers=["p257"]).ids == ["p257_001"]


def test_voicebank_rejects_bad_names_and_rates(tmp_path):
    root = tmp_path / "vb"
    write(root / "p232_001.wav", tone(0.5, 22050), 22050)
    with pytest.raises(AudioError, match=r"p232_001\.wav has sample rate 22050 Hz.*16000 Hz or 48000 Hz"):
        VoiceBank(root)[0]
    write(root / "notes.wav", tone(0.5, 16000), 16000)
    with pytest.raises(AudioError, match=r"notes\.wav does not follow"):
        VoiceBank(root)


def test_demand_48k_channel_selection(tmp_path):
    for env in ("DKITCHEN", "STRAFFIC"):
        for ch in range(1, 17):
            write(tmp_path / "demand" / env / f"ch{ch:02d}.wav", tone(0.3, 48000, 100 * ch), 48000)
    ds = Demand(tmp_path / "demand")
    assert ds.ids == ["DKITCHEN", "STRAFFIC"]
    r = ds[1]
    check_record(r)
    assert r.waveform.shape == (int(0.3 * SR),)
    assert r.meta == {"environment": "STRAFFIC", "channel": 1, "category": "street"}
    r5 = Demand(tmp_path / "demand", channel=5, environments=["DKITCHEN"])[0]
    spec = np.abs(np.fft.rfft(r5.waveform))
    assert abs(np.argmax(spec) * SR / len(r5.waveform) - 500) < 5  # channel 5 holds the 500 Hz tone
    with pytest.raises(ValueError, match=r"'channel' parameter of Demand must be an int in \[1, 16\]"):
        Demand(tmp_path / "demand", channel=17)
    with pytest.raises(AudioError, match="not found"):
        Demand(tmp_path / "demand", environments=["NPARK"])


def test_demand_16k_and_missing_channel(tmp_path):
    write(tmp_path / "d" / "NPARK" / "ch01.wav", tone(0.3, 16000), 16000)
    check_record(Demand(tmp_path / "d")[0])
    with pytest.raises(AudioError, match="has no ch02.wav"):
        Demand(tmp_path / "d", channel=2)


def test_librispeech_flac_and_transcripts(tmp_path):
    chap = tmp_path / "LibriSpeech" / "test-clean" / "19" / "198"
    for u in (0, 1):
        write(chap / f"19-198-{u:04d}.flac", tone(0.4, SR, 200 + u * 50), SR, format="FLAC")
    (chap / "19-198.trans.txt").write_text("19-198-0000 NORTHANGER ABBEY\n19-198-0001 CHAPTER ONE\n")
    ds = LibriSpeech(tmp_path / "LibriSpeech")
    assert ds.ids == ["19-198-0000", "19-198-0001"]
    r = ds[1]
    check_record(r)
    assert (r.speaker, r.transcript, r.meta["chapter"]) == ("19", "CHAPTER ONE", "198")
    np.testing.assert_allclose(r.waveform, tone(0.4, SR, 250), atol=1e-4)  # FLAC is 16-bit
    (chap / "19-198.trans.txt").write_text("19-198-0000 NORTHANGER ABBEY\n")
    with pytest.raises(AudioError, match="has no line for 19-198-0001"):
        LibriSpeech(tmp_path / "LibriSpeech")


def test_musan_kinds(tmp_path):
    m = tmp_path / "musan"
    write(m / "noise" / "free-sound" / "noise-free-sound-0000.wav", tone(0.3, SR), SR)
    write(m / "music" / "jamendo" / "music-jamendo-0000.wav", tone(0.3, SR, 220), SR)
    write(m / "speech" / "librivox" / "speech-librivox-0000.wav", tone(0.3, SR, 150), SR)
    assert Musan(m).ids == ["noise/free-sound/noise-free-sound-0000"]
    ds = Musan(m, kinds=("music", "speech"))
    assert ds.ids == ["music/jamendo/music-jamendo-0000", "speech/librivox/speech-librivox-0000"]
    assert ds[1].speaker == "speech-librivox-0000" and ds[1].meta == {"kind": "speech", "source": "librivox"}
    with pytest.raises(ValueError, match="'kinds' parameter"):
        Musan(m, kinds=("ambient",))


def test_folder_with_transcript_csv(tmp_path):
    root = tmp_path / "mine"
    write(root / "a.wav", tone(0.3, 22050), 22050)
    write(root / "sub" / "b.flac", tone(0.3, 44100), 44100, format="FLAC")
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("file,transcript,speaker\na.wav,hello there,ann\nb,second one,bob\n")
    ds = AudioFolder(root, transcripts=csv_path)
    assert ds.ids == ["a", "sub/b"]
    a, b = ds
    check_record(a)
    assert a.waveform.shape == (int(0.3 * SR),) and (a.transcript, a.speaker) == ("hello there", "ann")
    assert (b.transcript, b.speaker) == ("second one", "bob")
    csv_path.write_text("file,transcript\nzzz.wav,ghost\n")
    with pytest.raises(AudioError, match=r"t\.csv, line 2: file 'zzz.wav' matches no audio file"):
        AudioFolder(root, transcripts=csv_path)
    csv_path.write_text("name,text\n")
    with pytest.raises(AudioError, match="'file' and 'transcript' columns"):
        AudioFolder(root, transcripts=csv_path)
    with pytest.raises(AudioError, match="22050 Hz"):
        AudioFolder(root, allowed_rates=(16000,))[0]


# ---------------------------------------------------------------------------- validation

def test_stereo_silent_nan_empty_unreadable_name_the_file(tmp_path):
    stereo = write(tmp_path / "stereo.wav", tone(0.2, SR, channels=2), SR)
    with pytest.raises(AudioError, match=r"stereo\.wav has 2 channels where mono is expected.*channel=1"):
        read_audio(stereo)
    np.testing.assert_allclose(read_audio(stereo, channel=2), tone(0.2, SR)[:, ] * 1.0, atol=1e-4)
    silent = write(tmp_path / "silent.wav", np.zeros(SR // 4), SR)
    with pytest.raises(AudioError, match=r"silent\.wav.*digitally silent"):
        read_audio(silent)
    nan = write(tmp_path / "nan.wav", np.r_[tone(0.1, SR), np.nan], SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav.*finite"):
        read_audio(nan)
    empty = write(tmp_path / "empty.wav", np.zeros(0), SR)
    with pytest.raises(AudioError, match=r"empty\.wav.*empty"):
        read_audio(empty)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00not really audio")
    with pytest.raises(AudioError, match=r"Cannot read audio file .*junk\.wav"):
        read_audio(junk)
    with pytest.raises(AudioError, match="found no audio files"):
        AudioFolder(tmp_path / "nothing_here" if (tmp_path / "nothing_here").mkdir() is None else None)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        VoiceBank(tmp_path / "absent")


@pytest.mark.parametrize("rates", [(44100, 16000), (48000, 16000), (8012, 16000), (16000, 22050)])
def test_blockwise_resampling_equals_one_shot_torchaudio(rates):
    from torch_bridge.data.record import resample

    x = np.random.default_rng(0).standard_normal(123457)
    ref = AF.resample(torch.from_numpy(x), *rates).numpy()
    y = resample(x, *rates, block=10000)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-12)
    assert resample(x.astype(np.float32), *rates).dtype == np.float32
