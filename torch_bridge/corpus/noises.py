"""Noise types of the embedded corpus.

Real recordings come from two Debian packages:

- ``ufoai-sound``: ambience loops inside the zip ``0snd.pk3`` (``sound/ambience/*.ogg``),
  licences per file from the package's machine-readable ``debian/copyright``;
- ``openttd-opensfx``: ``opensfx.cat``, a table of (offset, size) pairs (the first offset,
  with its top bit as a format flag, gives the table length) followed by entries made of a
  length-prefixed name, which carries title, authors and licence, and a RIFF/WAV file.

Each real noise type concatenates its clips (each downmixed, resampled to 16 kHz, with
silent gaps longer than 0.1 s shortened, and set to the same loudness) with 100 ms equal-power crossfades, repeated to the requested length.
Every clip of both sources is either assigned to a type below or listed, with a reason, in
``EXCLUDED`` (the reviewed list: titles, credits and descriptions were read; synthetic,
musical, tonal-effect, impulsive or creature sounds are out). ``megaglest-data`` (242 MB)
is not used.

Synthetic types are deterministic functions of the seed: white, pink (1/f), brown (1/f^2),
speech-shaped (white noise with the long-term spectrum of the babble voices), multi-talker
babble (espeak-ng talkers that are never clean speakers) and mains hum (50 Hz with
harmonics over a -50 dB noise floor).
"""
from __future__ import annotations

import dataclasses
import io
import re
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..data.record import SAMPLE_RATE, check_waveform, resample
from .speech import MissingDependencyError

UFOAI_PK3 = Path("/usr/share/games/ufoai/base/0snd.pk3")
UFOAI_COPYRIGHT = Path("/usr/share/doc/ufoai-sound/copyright")
OPENSFX_CAT = Path("/usr/share/games/openttd/baseset/opensfx/opensfx.cat")
PACKAGES = {"ufoai": "ufoai-sound", "opensfx": "openttd-opensfx"}
_CLIP_LUFS = -30.0
_XFADE_S = 0.1


@dataclasses.dataclass(frozen=True)
class NoiseType:
    """A noise type: a DEMAND-like category and either clips (source, name) or a generator."""

    name: str
    category: str
    clips: tuple[tuple[str, str], ...] = ()
    synthetic: bool = False
    description: str = ""


# ufoai clips by file stem; opensfx clips by the quoted title at the start of their entry name.
REAL_TYPES: tuple[NoiseType, ...] = (
    NoiseType("street", "street/traffic", (
        ("ufoai", "city_abnd_ufoai_atm"), ("ufoai", "sand-city"),
        ("opensfx", "Modern bus start"), ("opensfx", "Old bus start"),
        ("opensfx", "Truck/old bus start, pull away"), ("opensfx", "Level crossing"),
        ("opensfx", "Modern car horn")), description="city ambience, buses, trucks, a crossing, horns"),
    NoiseType("transport", "transport", (
        ("opensfx", "Steam train station departure"), ("opensfx", "Diesel/electric train station departure"),
        ("opensfx", "Maglev train station departure"), ("opensfx", "Monorail train station departure"),
        ("opensfx", "Steam engine going in tunnel"), ("opensfx", "Ship horn"), ("opensfx", "Ferry horn"),
        ("opensfx", "Propeller plane start"), ("opensfx", "Early jet take off"),
        ("opensfx", "Modern jet take off"), ("opensfx", "Mach 1+ Jet take off"), ("opensfx", "Helicopter")),
        description="trains, ships, aircraft"),
    NoiseType("crowd", "crowd/babble", (
        ("ufoai", "tv_newswav"), ("opensfx", "Applause")), description="TV news babble, an audience"),
    NoiseType("wind", "nature", (
        ("ufoai", "arcticwind"), ("opensfx", "Wind"), ("opensfx", "Heavy wind")), description="wind"),
    NoiseType("water", "nature", (
        ("ufoai", "water01"), ("ufoai", "water02"), ("ufoai", "water03"), ("ufoai", "water"),
        ("ufoai", "waterfontain")), description="running water, a fountain"),
    NoiseType("storm", "nature", (
        ("ufoai", "thunder1"), ("ufoai", "thunder2"), ("ufoai", "thunder3")), description="thunder and rain"),
    NoiseType("fire", "nature", (
        ("ufoai", "fire"), ("ufoai", "fire1"), ("ufoai", "fire2"), ("ufoai", "firesoft"),
        ("ufoai", "smallfire"), ("ufoai", "fire03"), ("ufoai", "fire04"), ("ufoai", "fire05"),
        ("ufoai", "fire06")), description="crackling fire"),
    NoiseType("machinery", "machinery", (
        ("ufoai", "minepump03"), ("ufoai", "hum"), ("ufoai", "hum2"), ("ufoai", "machine1"),
        ("ufoai", "wind_turbine"), ("ufoai", "steam"), ("opensfx", "Mining machinery"),
        ("opensfx", "Sawmill"), ("opensfx", "Jackhammer"), ("opensfx", "Lumber mill: Chainsaw"),
        ("opensfx", "Building bridge")), description="pumps, motors, saws, a jackhammer"),
)

SYNTHETIC_TYPES: tuple[NoiseType, ...] = (
    NoiseType("white", "synthetic", synthetic=True, description="Gaussian white noise"),
    NoiseType("pink", "synthetic", synthetic=True, description="1/f power spectrum"),
    NoiseType("brown", "synthetic", synthetic=True, description="1/f^2 power spectrum (flat below 10 Hz)"),
    NoiseType("speech_shaped", "synthetic", synthetic=True,
              description="white noise with the long-term average spectrum of the babble voices"),
    NoiseType("babble", "crowd/babble", synthetic=True,
              description="espeak-ng talkers that are never clean speakers (see talkers), summed at equal level"),
    NoiseType("hum", "machinery", synthetic=True,
              description="50 Hz mains hum, harmonics to 750 Hz, -50 dB white floor"),
)

NOISE_TYPES: dict[str, NoiseType] = {t.name: t for t in REAL_TYPES + SYNTHETIC_TYPES}

# The reviewed exclusion list: every clip of both sources not used above, with the reason.
_ALIEN = "game sound design for alien technology (synthesised, not a recording of a real scene)"
EXCLUDED: dict[tuple[str, str], str] = {
    **{("ufoai", n): _ALIEN for n in (
        "alien-device", "alien-generator", "alien-ventilation", "alien_engine", "alienatmo",
        "alienbase-bubbles", "aliencom", "alienenergy1", "alienmachinery1", "alienmachinery2",
        "alienmachinery3", "alienmachinery4", "alienmachinery5", "alienpowermachinery1",
        "alienwormhole", "engine_alien_big", "engine_alien_medium", "engine_alien_small")},
    ("ufoai", "bloodspiderwalk"): "creature foley from the game",
    ("ufoai", "creak"): "single creak, 1.2 s at 8 kHz",
    ("ufoai", "cricket_loop"): "3 s loop; too short and strongly periodic",
    ("ufoai", "disco"): "music",
    ("ufoai", "droning_long"): "synthetic drone at 8 kHz",
    ("ufoai", "droning_short"): "synthetic drone at 8 kHz",
    ("ufoai", "jingle"): "music jingle",
    ("ufoai", "jingle2"): "music jingle",
    ("ufoai", "lights_loop"): "1.5 s electric buzz loop (synthetic-sounding)",
    ("ufoai", "radiomessage"): "processed radio speech messages (intelligible speech)",
    ("ufoai", "sparks"): "electric spark effect",
    ("ufoai", "sparks_short"): "electric spark effect",
    ("ufoai", "tv_static"): "electronic static (synthetic-sounding)",
    ("ufoai", "ufo_night_atm"): "designed game atmosphere; provenance of its parts unclear",
    **{("opensfx", n): "game jingle, effect or impulsive event, not a background scene" for n in (
        "Good Year", "Bad Year", "Splat (building docks/canals/river)", "Factory Whistle", "Cash till",
        "Beep", "Morse", "Plane wheels touching ground", "Oooh sound", "Splat (terraform/non-rail builds",
        "Splat (rail builds)", "Unused/Nothing", "Unused/Nothing | OpenSFX 1.0.3", "Crash", "Explosion",
        "Big crash", "Road vehicle breakdown", "Train/ship breakdown", "Electric sparking",
        "Steam (of steam engine)", "Truck/old bus start, pull away with horn",
        "Lumber mill: Crashing tree", "Lumber mill: Falling tree")},
    **{("opensfx", n): "animal call (single event)" for n in (
        "Sheep", "Cow", "Horse", "Tropical: Bird (1)", "Tropical: Bird (2)", "Tropical: Lion roar",
        "Tropical: Monkeys")},
    ("opensfx", "*Toyland*"): "all 'Toyland:' entries are cartoon effects",
}


# ----------------------------------------------------------------------------- sources

def _require(path: Path, source: str) -> None:
    if not path.is_file():
        pkg = PACKAGES[source]
        raise MissingDependencyError(
            f"The corpus needs the Debian package '{pkg}' ({path} not found). "
            f"Install it with `make setup` or `sudo apt-get install {pkg}`.")


def _mono16k(x: np.ndarray, rate: int, label: str) -> np.ndarray:
    if x.ndim == 2:
        x = x.mean(axis=1)
    return resample(check_waveform(x, label), rate, SAMPLE_RATE)


def ufoai_clips() -> list[str]:
    _require(UFOAI_PK3, "ufoai")
    with zipfile.ZipFile(UFOAI_PK3) as z:
        return sorted(Path(n).stem for n in z.namelist()
                      if n.startswith("sound/ambience/") and n.endswith(".ogg"))


def read_ufoai(name: str) -> np.ndarray:
    """One ambience clip, mono float64 at 16 kHz."""
    import soundfile as sf

    _require(UFOAI_PK3, "ufoai")
    member = f"sound/ambience/{name}.ogg"
    with zipfile.ZipFile(UFOAI_PK3) as z:
        data = z.read(member)
    x, rate = sf.read(io.BytesIO(data), dtype="float64")
    return _mono16k(x, rate, f"{UFOAI_PK3}:{member}")


def ufoai_licences() -> dict[str, tuple[str, str]]:
    """Clip stem -> (licence, copyright holders) from the package's DEP-5 copyright file."""
    _require(UFOAI_COPYRIGHT, "ufoai")
    out: dict[str, tuple[str, str]] = {}
    for stanza in re.split(r"\n\s*\n", UFOAI_COPYRIGHT.read_text(encoding="utf-8", errors="replace")):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, val = line.split(":", 1)
                fields[key] = val.strip()
        files = fields.get("Files", "").split()
        licence = fields.get("License", "").split("\n")[0].strip()
        holders = "; ".join(s for s in fields.get("Copyright", "").split("\n") if s)
        for f in files:
            m = re.fullmatch(r"base/sound/ambience/(.+)\.ogg", f)
            if m:
                out[m.group(1)] = (licence, holders)
    return out


def _opensfx_table() -> list[tuple[str, str, bytes]]:
    _require(OPENSFX_CAT, "opensfx")
    data = OPENSFX_CAT.read_bytes()
    first = struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF
    out = []
    for i in range(first // 8):
        off, size = struct.unpack_from("<II", data, 8 * i)
        off &= 0x7FFFFFFF
        nlen = data[off]
        full = data[off + 1:off + 1 + nlen].rstrip(b"\0").decode("latin-1")
        m = re.match(r'"([^"]*)"', full)
        title = m.group(1) if m else full
        out.append((title, full, data[off + 1 + nlen:off + size]))
    return out


def opensfx_clips() -> list[tuple[str, str]]:
    """(title, full credit string) of every OpenSFX entry, in file order."""
    return [(t, full) for t, full, _ in _opensfx_table()]


def read_opensfx(title: str) -> tuple[np.ndarray, str]:
    """One OpenSFX sound by title: (mono float64 at 16 kHz, its credit string)."""
    import soundfile as sf

    for t, full, wav in _opensfx_table():
        if t == title:
            x, rate = sf.read(io.BytesIO(wav), dtype="float64")
            return _mono16k(x, rate, f"{OPENSFX_CAT}:{title}"), full
    raise KeyError(f"OpenSFX has no sound titled {title!r}.")


def is_reviewed(source: str, name: str) -> bool:
    """True when the clip is assigned to a noise type or listed in EXCLUDED."""
    used = {c for t in REAL_TYPES for c in t.clips}
    if (source, name) in used or (source, name) in EXCLUDED:
        return True
    return source == "opensfx" and name.startswith("Toyland:")


# ----------------------------------------------------------------------------- assembly

def _set_loudness(x: np.ndarray, target: float, label: str) -> np.ndarray:
    from ..mixing import loudness

    return x * 10.0 ** ((target - loudness(x, SAMPLE_RATE, name=label)) / 20.0)


def drop_gaps(x: np.ndarray, *, floor_db: float = -50.0, max_gap: float = 0.1) -> np.ndarray:
    """Shorten quiet gaps: runs of 10 ms frames more than ``-floor_db`` dB below the clip's
    RMS and longer than ``max_gap`` s keep only their first and last ``max_gap / 2`` s.
    Some recordings (the TV news loop) hold seconds of digital silence between phrases,
    which would make a noise segment silent and its SNR undefined."""
    flen = SAMPLE_RATE // 100
    n = x.shape[0] // flen
    rms = np.sqrt(np.mean(x[:n * flen].reshape(n, flen) ** 2, axis=1))
    quiet = rms < np.sqrt(np.mean(x * x)) * 10.0 ** (floor_db / 20.0)
    keep = np.ones(n, dtype=bool)
    half = int(round(max_gap * 100)) // 2
    i = 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if j - i > 2 * half:
            keep[i + half:j - half] = False
        i = j
    mask = np.ones(x.shape[0], dtype=bool)
    mask[:n * flen] = np.repeat(keep, flen)
    return x[mask]


def concatenate(clips: list[np.ndarray], n: int) -> np.ndarray:
    """Interleave clips into ``n`` samples joined by 100 ms equal-power crossfades.

    Clips are visited in turn; each visit takes the next excerpt of at most an equal share
    (n / number of clips) from where that clip's previous excerpt ended (wrapping around),
    so long recordings contribute fresh material on each pass and short ones play whole.
    """
    L = int(_XFADE_S * SAMPLE_RATE)
    share = max(n // len(clips), 4 * L)
    t = (np.arange(L) + 0.5) / L
    fade_in, fade_out = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
    pos = [0] * len(clips)
    parts: list[np.ndarray] = []
    total = k = 0
    while total < n + L:
        i = k % len(clips)
        k += 1
        c = clips[i]
        m = min(c.shape[0], share)
        piece = np.take(c, (pos[i] + np.arange(m)) % c.shape[0])
        pos[i] = (pos[i] + m) % c.shape[0]
        if parts:
            prev = parts[-1]
            prev[-L:] = prev[-L:] * fade_out + piece[:L] * fade_in
            piece = piece[L:]
        parts.append(piece.copy())
        total += piece.shape[0]
    return np.concatenate(parts)[:n]


def real_noise(kind: NoiseType, seconds: float) -> tuple[np.ndarray, list[dict]]:
    """Build a real noise type; returns (float64 array of shape (n,), component credits)."""
    lic = ufoai_licences() if any(s == "ufoai" for s, _ in kind.clips) else {}
    clips, credits = [], []
    for source, name in kind.clips:
        if source == "ufoai":
            x = read_ufoai(name)
            licence, holders = lic.get(name, ("GPL-2+", "The UFO:AI Team"))
            credit = {"source": "ufoai-sound", "member": f"0snd.pk3:sound/ambience/{name}.ogg",
                      "licence": licence, "attribution": holders}
        else:
            x, full = read_opensfx(name)
            m = re.search(r"License: ([^.]+(?:\.\d[^.]*)?)", full)
            credit = {"source": "openttd-opensfx", "member": f"opensfx.cat:{name}",
                      "licence": m.group(1).strip() if m else "CC-BY-SA-3.0", "attribution": full}
        shorter = drop_gaps(x)
        credit["gaps_removed_s"] = round((x.shape[0] - shorter.shape[0]) / SAMPLE_RATE, 2)
        clips.append(_set_loudness(shorter, _CLIP_LUFS, f"{source}:{name}"))
        credits.append(credit)
    return concatenate(clips, int(seconds * SAMPLE_RATE)), credits


def _shape(white: np.ndarray, gain_of_f) -> np.ndarray:
    n = white.shape[0]
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    g = gain_of_f(f)
    g[0] = 0.0
    return np.fft.irfft(spec * g, n)


def synthetic_noise(name: str, seconds: float, *, rng: np.random.Generator,
                    babble_talkers: list[list[np.ndarray]] | None = None) -> np.ndarray:
    """One synthetic noise type as float64 array of shape (seconds * 16000,).

    ``babble_talkers``: per talker, a list of utterances (16 kHz) — needed by 'babble' and
    'speech_shaped'.
    """
    n = int(seconds * SAMPLE_RATE)
    if name == "white":
        return rng.standard_normal(n)
    if name == "pink":
        return _shape(rng.standard_normal(n), lambda f: 1.0 / np.sqrt(np.maximum(f, 1.0)))
    if name == "brown":
        return _shape(rng.standard_normal(n), lambda f: 1.0 / np.maximum(f, 10.0))
    if name == "hum":
        t = np.arange(n) / SAMPLE_RATE
        x = np.zeros(n)
        for k in range(1, 16):
            amp = (2.0 if k % 2 else 1.0) / k
            x += amp * np.sin(2 * np.pi * 50.0 * k * t + rng.uniform(0, 2 * np.pi))
        x *= 1.0 + 0.05 * np.sin(2 * np.pi * 0.3 * t)
        return x + 10 ** (-50 / 20) * np.sqrt(np.mean(x * x)) * rng.standard_normal(n)
    if babble_talkers is None or not all(babble_talkers):
        raise ValueError(f"Synthetic noise {name!r} needs babble_talkers (utterances of the babble voices).")
    if name == "speech_shaped":
        from scipy.signal import welch

        speech = np.concatenate([u for talker in babble_talkers for u in talker])
        f, psd = welch(speech, fs=SAMPLE_RATE, nperseg=512)
        return _shape(rng.standard_normal(n), lambda ff: np.sqrt(np.interp(ff, f, psd)))
    if name == "babble":
        out = np.zeros(n)
        for talker in babble_talkers:
            order = rng.permutation(len(talker))
            stream = np.concatenate([talker[i] for i in order])
            while stream.shape[0] < n + stream.shape[0] // 2:
                stream = np.concatenate([stream, stream])
            start = int(rng.integers(0, stream.shape[0] - n))
            seg = stream[start:start + n]
            out += seg / np.sqrt(np.mean(seg * seg))
        return out
    raise KeyError(f"Unknown noise type {name!r}; known: {sorted(NOISE_TYPES)}.")
