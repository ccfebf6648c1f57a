"""Speech sources of the embedded corpus: synthetic English voices (Debian's flite and
espeak-ng reading ``sentences.txt``) and real studio prompts (Debian's asterisk core sounds,
G.722 at 16 kHz, decoded with the ``G722`` package from PyPI).

Every function returns mono float64 audio at 16 kHz; nothing here writes files.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np

from ..data.record import SAMPLE_RATE, check_waveform, resample
from ..errors import UserError


class MissingDependencyError(UserError, RuntimeError):
    """A Debian package (or PyPI package) the corpus needs is not installed."""


@dataclasses.dataclass(frozen=True)
class Voice:
    """A synthetic speaker: an engine, its voice name and settings.

    ``role``: 'train' (reads training and dev sentences), 'test' (held-out speaker, reads
    test sentences), or 'babble' (used only inside the babble noise, never as clean speech).
    """

    id: str
    engine: str  # 'flite' or 'espeak-ng'
    voice: str
    sex: str
    accent: str
    role: str
    pitch: int | None = None  # espeak-ng -p (0-99)
    speed: int | None = None  # espeak-ng -s (words per minute)

    def command(self, text: str) -> list[str]:
        if self.engine == "flite":
            return ["flite", "-voice", self.voice, "-t", text, "-o", "/dev/stdout"]
        cmd = ["espeak-ng", "-v", self.voice, "--stdout"]
        if self.pitch is not None:
            cmd += ["-p", str(self.pitch)]
        if self.speed is not None:
            cmd += ["-s", str(self.speed)]
        return cmd + [text]


# The four flite voices are distinct recorded speakers (CMU ARCTIC / diphone sets). The
# espeak-ng speakers differ by accent definition, voice variant (+m/+f: formant sets) and
# pitch/speed settings; they are formant-synthesis voices and stay distinguishable by ear
# and by a speaker model trained on them, but they are not human speakers.
VOICES: tuple[Voice, ...] = (
    Voice("flite_awb", "flite", "awb", "m", "Scottish English", "train"),
    Voice("flite_rms", "flite", "rms", "m", "US English", "train"),
    Voice("flite_kal16", "flite", "kal16", "m", "US English (diphone)", "train"),
    Voice("flite_slt", "flite", "slt", "f", "US English", "test"),
    Voice("espeak_us_f2", "espeak-ng", "en-us+f2", "f", "US English", "train", pitch=60, speed=165),
    Voice("espeak_gb_m1", "espeak-ng", "en+m1", "m", "British English", "train", pitch=40, speed=160),
    Voice("espeak_sc_m3", "espeak-ng", "en-gb-scotland+m3", "m", "Scottish English", "train", pitch=35, speed=150),
    Voice("espeak_car_f1", "espeak-ng", "en-029+f1", "f", "Caribbean English", "train", pitch=65, speed=155),
    Voice("espeak_wm_m7", "espeak-ng", "en-gb-x-gbcwmd+m7", "m", "West Midlands English", "train", pitch=45, speed=170),
    Voice("espeak_rp_f4", "espeak-ng", "en-gb-x-rp+f4", "f", "British English (RP)", "test", pitch=55, speed=160),
    # babble talkers: never used as clean speech, so babble never contains a test speaker
    Voice("babble_lan_m4", "espeak-ng", "en-gb-x-gbclan+m4", "m", "Lancashire English", "babble", pitch=42, speed=175),
    Voice("babble_us_m6", "espeak-ng", "en-us+m6", "m", "US English", "babble", pitch=30, speed=165),
    Voice("babble_gb_f5", "espeak-ng", "en+f5", "f", "British English", "babble", pitch=70, speed=170),
    Voice("babble_car_m2", "espeak-ng", "en-029+m2", "m", "Caribbean English", "babble", pitch=50, speed=160),
    Voice("babble_sc_f3", "espeak-ng", "en-gb-scotland+f3", "f", "Scottish English", "babble", pitch=62, speed=180),
    Voice("babble_us_m5", "espeak-ng", "en-us+m5", "m", "US English", "babble", pitch=38, speed=150),
)
VOICE_BY_ID = {v.id: v for v in VOICES}

ENGINE_PACKAGES = {"flite": "flite", "espeak-ng": "espeak-ng"}
ENGINE_LICENCES = {
    "flite": "flite (Debian package flite): BSD-style CMU licence; voices awb/rms/slt from CMU ARCTIC, kal16 CMU diphone",
    "espeak-ng": "espeak-ng (Debian package espeak-ng): GPL-3+; formant synthesis, no recorded speaker",
}


def sentences() -> list[str]:
    """The fixed sentence list (``sentences.txt``; comments and blank lines dropped)."""
    text = resources.files(__package__).joinpath("sentences.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.splitlines() if s.strip() and not s.startswith("#")]


def require_engine(engine: str) -> None:
    binary = engine
    if shutil.which(binary) is None:
        pkg = ENGINE_PACKAGES[engine]
        raise MissingDependencyError(
            f"The corpus needs the Debian package '{pkg}' (command '{binary}' not found). "
            f"Install it with `make setup` or `sudo apt-get install {pkg}`.")


def engine_version(engine: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", ENGINE_PACKAGES[engine]],
                             capture_output=True, text=True, check=True).stdout
        return out.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def synthesize(voice: Voice, text: str) -> np.ndarray:
    """Speak ``text`` with ``voice``; returns float64 array of shape (n,) at 16 kHz."""
    import soundfile as sf

    require_engine(voice.engine)
    proc = subprocess.run(voice.command(text), capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) < 100:
        raise RuntimeError(f"{voice.engine} failed for voice {voice.voice!r} "
                           f"(exit {proc.returncode}): {proc.stderr.decode(errors='replace')[:300]}")
    x, rate = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    if x.ndim == 2:
        x = x.mean(axis=1)
    x = check_waveform(x, f"{voice.engine} output for {voice.id}")
    return resample(x, rate, SAMPLE_RATE)


# ----------------------------------------------------------------------------- asterisk

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_DOC = Path("/usr/share/doc")


@dataclasses.dataclass(frozen=True)
class RealSpeaker:
    language: str
    folder: str
    speaker: str
    sex: str
    licence: str
    attribution: str


# From each package's debian/copyright (CREDITS), checked for asterisk-core-sounds 1.6.1-1.
REAL_SPEAKERS: dict[str, RealSpeaker] = {
    "en": RealSpeaker("en", "en_US_f_Allison", "allison", "f", "CC-BY-SA-3.0",
                      "Recorded by Allison Smith (http://www.theivrvoice.com); financial contributions "
                      "by Digium, Inc. Asterisk core sounds 1.6.1 (Debian asterisk-core-sounds-en-g722)."),
    "es": RealSpeaker("es", "es_MX_f_Allison", "allison", "f", "CC-BY-SA-3.0",
                      "Recorded by Allison Smith (http://www.theivrvoice.com); financial contributions "
                      "by Digium, Inc. Asterisk core sounds 1.6.1 (Debian asterisk-core-sounds-es-g722)."),
    "fr": RealSpeaker("fr", "fr_CA_f_June", "june", "f", "CC-BY-SA-3.0",
                      "Recorded by June Wallack (http://www.junewallack.com); translated by Clod Patry, "
                      "Kristopher Lalletti and June Wallack. Asterisk core sounds 1.6.1 "
                      "(Debian asterisk-core-sounds-fr-g722)."),
    "it": RealSpeaker("it", "it_IT_m_Carlo", "carlo", "m", "CC-BY-3.0",
                      "Recorded by Carlo Flora (http://www.carloflora.com); translated by Silvia Petrin. "
                      "Asterisk core sounds 1.6.1 (Debian asterisk-core-sounds-it-g722)."),
    "ru": RealSpeaker("ru", "ru_RU_f_IvrvoiceRU", "ivrvoice_ru", "f", "CC-BY-3.0",
                      "Provided by Maxim Topal (http://www.ivrvoice.ru). Asterisk core sounds 1.6.1 "
                      "(Debian asterisk-core-sounds-ru-g722)."),
}


def _asterisk_transcripts(lang: str) -> dict[str, str]:
    pkg = f"asterisk-core-sounds-{lang}"
    path = ASTERISK_DOC / pkg / f"core-sounds-{lang}.txt.gz"
    if not path.is_file():
        raise MissingDependencyError(
            f"The corpus needs the Debian package '{pkg}' for the {lang} prompt transcripts "
            f"({path} not found). Install it with `make setup` or `sudo apt-get install {pkg}`.")
    out = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith(";") or ":" not in line:
            continue
        name, text = line.split(":", 1)
        out[name.strip()] = " ".join(text.split())
    return out


def asterisk_prompts(lang: str) -> list[tuple[str, str, Path]]:
    """(prompt name, transcript, .g722 path) of the usable prompts of one language, sorted.

    Prompts whose transcript is a bracketed description (tones, beeps, silence) are left out.
    """
    spk = REAL_SPEAKERS[lang]
    folder = ASTERISK_SOUNDS / spk.folder
    pkg = f"asterisk-core-sounds-{lang}-g722"
    if not folder.is_dir() or not any(folder.glob("*.g722")):
        raise MissingDependencyError(
            f"The corpus needs the Debian package '{pkg}' ({folder} has no .g722 files). "
            f"Install it with `make setup` or `sudo apt-get install {pkg}`.")
    texts = _asterisk_transcripts(lang)
    out = []
    for name, text in sorted(texts.items()):
        path = folder / f"{name}.g722"
        if not path.is_file() or not text or text.startswith("[") or not any(c.isalpha() for c in text):
            continue
        out.append((name, text, path))
    return out


def decode_g722(path: Path) -> np.ndarray:
    """Decode a 64 kbit/s G.722 file to float64 at 16 kHz, shape (n,)."""
    try:
        import G722
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise MissingDependencyError("The corpus needs the PyPI package 'G722' (pip install G722).") from exc
    pcm = np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(Path(path).read_bytes()), dtype=np.float64)
    return check_waveform(pcm / 32768.0, "G.722 prompt", source=path)
