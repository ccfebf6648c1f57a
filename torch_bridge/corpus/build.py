"""Build, verify and load the embedded corpus.

Layout under ``<cache_dir>/<size>/``::

    manifest.json            ids, speakers, texts, durations, licences/attribution, sha256 of every file
    speech/<voice>/<id>.flac synthetic English (flite / espeak-ng reading sentences.txt)
    real/<lang>/<id>.flac    asterisk studio prompts (4 human speakers, 5 languages)
    noise/<type>.flac        one recording per noise type (real and synthetic)

All audio is 16 kHz mono 16-bit FLAC. Every file is written under a temporary name and
renamed into place, and the manifest is written last the same way, so an interrupted build
leaves no half-written file and no manifest entry for a missing one. A build keeps every
file whose checksum matches the manifest and regenerates only missing or corrupt ones;
a changed recipe (sizes, sentences, voices, noise tables) rebuilds everything.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..data.record import SAMPLE_RATE, AudioRecord, check_choice
from ..errors import UserError
from . import noises as nz
from . import speech as sp

FORMAT_VERSION = 2  # bump whenever generated audio changes (code, not only tables)
_NOISE_LUFS = -30.0
_MAX_PEAK = 0.99


class CorpusError(UserError, RuntimeError):
    """The corpus is missing or corrupt and may not be built here."""


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """What a corpus size holds.

    voices : clean speaker ids (see ``speech.VOICES``); ``babble_voices`` only make babble.
    n_sentences : first N sentences of sentences.txt (None: all).
    test_every : sentence i is a test sentence when i % test_every == 0; train voices read
        the others (split 'train') and the test sentences (split 'dev'); test voices read
        only the test sentences (split 'test'), so 'test' is unseen speakers and texts.
    real_languages, real_per_language, real_seconds : asterisk prompts kept per language,
        chosen in a fixed hash order among prompts of real_seconds[0] .. real_seconds[1] s.
    noise_types, noise_seconds : noise recordings built and their length.
    babble_sentences : sentences each babble voice reads for the babble/speech-shaped noise.
    """

    name: str
    voices: tuple[str, ...]
    n_sentences: int | None
    test_every: int
    real_languages: tuple[str, ...]
    real_per_language: int
    real_seconds: tuple[float, float]
    noise_types: tuple[str, ...]
    noise_seconds: float
    babble_voices: tuple[str, ...]
    babble_sentences: int


_CLEAN = tuple(v.id for v in sp.VOICES if v.role != "babble")
_BABBLE = tuple(v.id for v in sp.VOICES if v.role == "babble")
_ALL_NOISES = tuple(nz.NOISE_TYPES)

SIZES: dict[str, CorpusSpec] = {
    "default": CorpusSpec("default", _CLEAN, None, 8, tuple(sp.REAL_SPEAKERS), 150, (1.0, 15.0),
                          _ALL_NOISES, 60.0, _BABBLE, 40),
    "small": CorpusSpec("small", ("flite_awb", "flite_rms", "espeak_us_f2", "flite_slt", "espeak_rp_f4"),
                        40, 8, tuple(sp.REAL_SPEAKERS), 12, (1.0, 15.0), _ALL_NOISES, 30.0, _BABBLE[:4], 10),
    "tiny": CorpusSpec("tiny", ("flite_awb", "espeak_us_f2", "flite_slt"), 4, 2, ("en", "fr"), 2,
                       (1.0, 6.0), ("white", "pink", "hum", "babble", "speech_shaped", "transport", "water"),
                       12.0, _BABBLE[:2], 3),
}


def default_cache_dir() -> Path:
    """``$JAXPROBE_CACHE/corpus`` when set, else ``~/.cache/jaxprobe/corpus``."""
    env = os.environ.get("JAXPROBE_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "jaxprobe") / "corpus"


def _spec(size: str | CorpusSpec) -> CorpusSpec:
    if isinstance(size, CorpusSpec):
        return size
    check_choice(size, "size", tuple(SIZES), fn="build_corpus")
    return SIZES[size]


def corpus_root(cache_dir: str | os.PathLike | None, size: str | CorpusSpec) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / _spec(size).name


# ----------------------------------------------------------------------------- planning

@dataclasses.dataclass
class _Item:
    id: str
    kind: str  # 'speech' | 'real_speech' | 'noise'
    path: str  # relative to the corpus root
    meta: dict[str, Any]
    make: Callable[[], tuple[np.ndarray, dict]]
    needs_babble: bool = False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _recipe(spec: CorpusSpec) -> str:
    payload = json.dumps({
        "format": FORMAT_VERSION, "spec": dataclasses.asdict(spec), "sentences": sp.sentences(),
        "voices": [dataclasses.asdict(v) for v in sp.VOICES],
        "noises": [dataclasses.asdict(t) for t in nz.NOISE_TYPES.values()],
        "real": {k: dataclasses.asdict(v) for k, v in sp.REAL_SPEAKERS.items()},
    }, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _sentence_split(spec: CorpusSpec) -> list[tuple[int, str, bool]]:
    sents = sp.sentences()
    if spec.n_sentences is not None:
        sents = sents[:spec.n_sentences]
    return [(i, s, i % spec.test_every == 0) for i, s in enumerate(sents)]


def _speech_items(spec: CorpusSpec) -> list[_Item]:
    items = []
    for vid in spec.voices:
        voice = sp.VOICE_BY_ID[vid]
        for i, text, is_test in _sentence_split(spec):
            if voice.role == "test" and not is_test:
                continue
            split = "test" if voice.role == "test" else ("dev" if is_test else "train")
            uid = f"{vid}-{i:03d}"
            items.append(_Item(
                uid, "speech", f"speech/{vid}/{uid}.flac",
                {"speaker": vid, "text": text, "sentence": i, "split": split, "language": "en",
                 "engine": voice.engine, "voice": voice.voice, "sex": voice.sex, "accent": voice.accent,
                 "source": sp.ENGINE_LICENCES[voice.engine].split(":")[0],
                 "licence": "CC0-1.0 (text written for this project; audio synthesised)",
                 "attribution": sp.ENGINE_LICENCES[voice.engine]},
                lambda v=voice, t=text: (sp.synthesize(v, t), {})))
    return items


def _prompt_order(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=8).digest()


def _real_items(spec: CorpusSpec) -> list[_Item]:
    items = []
    lo, hi = spec.real_seconds
    for lang in spec.real_languages:
        spk = sp.REAL_SPEAKERS[lang]
        prompts = [p for p in sp.asterisk_prompts(lang) if lo <= p[2].stat().st_size / 8000.0 <= hi]
        prompts.sort(key=lambda p: _prompt_order(f"{lang}/{p[0]}"))
        for name, text, path in sorted(prompts[:spec.real_per_language]):
            uid = f"ast-{lang}-{name.replace('/', '.')}"
            items.append(_Item(
                uid, "real_speech", f"real/{lang}/{uid}.flac",
                {"speaker": spk.speaker, "text": text, "language": lang, "sex": spk.sex, "split": "heldout",
                 "source": f"asterisk-core-sounds-{lang}-g722:{path.relative_to(sp.ASTERISK_SOUNDS)}",
                 "licence": spk.licence, "attribution": spk.attribution},
                lambda p=path: (sp.decode_g722(p), {})))
    return items


def _noise_items(spec: CorpusSpec, seed_of: Callable[[str], np.random.Generator], babble: dict) -> list[_Item]:
    items = []
    for name in spec.noise_types:
        if name not in nz.NOISE_TYPES:
            raise KeyError(f"Unknown noise type {name!r} in corpus spec; known: {sorted(nz.NOISE_TYPES)}.")
        t = nz.NOISE_TYPES[name]
        meta = {"category": t.category, "synthetic": t.synthetic, "description": t.description}
        if t.synthetic:
            meta.update(source="generated by torch_bridge.corpus.noises",
                        licence="CC0-1.0", attribution="jaxprobe (generated)")
            needs = name in ("babble", "speech_shaped")
            if needs:
                meta["talkers"] = list(spec.babble_voices)

            def make(n=name):
                return nz.synthetic_noise(n, spec.noise_seconds, rng=seed_of(n),
                                          babble_talkers=babble.get("talkers")), {}
            items.append(_Item(name, "noise", f"noise/{name}.flac", meta, make, needs_babble=needs))
        else:
            def make(kind=t):
                x, credits = nz.real_noise(kind, spec.noise_seconds)
                return x, {"components": credits,
                           "licence": sorted({c["licence"] for c in credits}),
                           "attribution": "; ".join(c["attribution"] for c in credits)}
            meta.update(source=" + ".join(sorted({nz.PACKAGES[s] for s, _ in t.clips})))
            items.append(_Item(name, "noise", f"noise/{name}.flac", meta, make))
    return items


# ----------------------------------------------------------------------------- writing

def _atomic_write_audio(path: Path, x: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{id(x)}")
    try:
        sf.write(str(tmp), x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _level(x: np.ndarray, kind: str, label: str) -> tuple[np.ndarray, float]:
    gain = 1.0
    if kind == "noise":
        from ..mixing import loudness

        gain = 10.0 ** ((_NOISE_LUFS - loudness(x, SAMPLE_RATE, name=label)) / 20.0)
    peak = float(np.max(np.abs(x))) * gain
    if peak > _MAX_PEAK:
        gain *= _MAX_PEAK / peak
    return x * gain, gain


def _produce(item: _Item, root: Path) -> dict:
    x, extra = item.make()
    x, gain = _level(np.asarray(x, dtype=np.float64), item.kind, item.id)
    path = root / item.path
    _atomic_write_audio(path, x)
    entry = {"id": item.id, "kind": item.kind, "path": item.path, **item.meta, **extra,
             "sample_rate": SAMPLE_RATE, "num_samples": int(x.shape[0]),
             "duration": round(x.shape[0] / SAMPLE_RATE, 4), "gain": gain,
             "bytes": path.stat().st_size, "sha256": _sha256(path)}
    return entry


def _package_versions() -> dict[str, str]:
    pkgs = ["flite", "espeak-ng", "ufoai-sound", "openttd-opensfx"]
    pkgs += [f"asterisk-core-sounds-{lang}{s}" for lang in sp.REAL_SPEAKERS for s in ("", "-g722")]
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\n", *pkgs],
                             capture_output=True, text=True, check=False).stdout
    except OSError:
        return {}
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def read_manifest(root: Path) -> dict | None:
    path = root / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and "items" in manifest else None


def verify(root: Path, manifest: dict) -> list[str]:
    """Ids of manifest items whose file is missing or whose sha256 differs."""
    bad = []
    for it in manifest["items"]:
        path = root / it["path"]
        if not path.is_file() or path.stat().st_size != it.get("bytes") or _sha256(path) != it["sha256"]:
            bad.append(it["id"])
    return bad


def _run(todo: list[_Item], root: Path, spec: CorpusSpec, babble: dict, workers: int, entries: dict) -> None:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        if any(it.needs_babble for it in todo):
            talkers = []
            sents = [s for _, s, _ in _sentence_split(SIZES["default"])][:spec.babble_sentences]
            for vid in spec.babble_voices:
                talkers.append(list(pool.map(lambda s, v=sp.VOICE_BY_ID[vid]: sp.synthesize(v, s), sents)))
            babble["talkers"] = talkers
        first = [it for it in todo if not it.needs_babble]
        second = [it for it in todo if it.needs_babble]
        for stage in (first, second):
            for entry in pool.map(lambda it: _produce(it, root), stage):
                entries[entry["id"]] = entry


@dataclasses.dataclass(frozen=True)
class BuildReport:
    root: Path
    built: int
    kept: int
    seconds: float
    manifest: dict


def build_corpus(
    cache_dir: str | os.PathLike | None = None,
    *,
    size: str | CorpusSpec = "default",
    workers: int | None = None,
    force: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build (or repair) the embedded corpus under ``<cache_dir>/<size>``.

    Parameters
    ----------
    cache_dir : path, optional
        Default ``$JAXPROBE_CACHE/corpus`` or ``~/.cache/jaxprobe/corpus``.
    size : {'default', 'small', 'tiny'} or CorpusSpec
    workers : int, optional
        Parallel synthesis/decoding threads (default: the CPU count).
    force : bool
        Regenerate every file even when its checksum matches.
    seed : int
        Seed of the synthetic noises (the default corpus uses 0).

    Returns
    -------
    BuildReport
        Root folder, counts of files built and kept, wall time and the manifest.

    Raises
    ------
    MissingDependencyError
        A Debian package the corpus needs is absent (the message names it).
    """
    from ..mixing import item_rng

    t0 = time.perf_counter()
    spec = _spec(size)
    root = corpus_root(cache_dir, spec)
    say = log or (lambda msg: None)
    voices = [sp.VOICE_BY_ID[v] for v in spec.voices + spec.babble_voices]
    for engine in sorted({v.engine for v in voices}):
        sp.require_engine(engine)

    babble: dict = {}
    items = _speech_items(spec) + _real_items(spec) + _noise_items(
        spec, lambda n: item_rng("corpus-noise", n, seed=seed), babble)
    recipe = _recipe(spec) + f"/seed={seed}"
    old = read_manifest(root)
    old_items = {}
    if old is not None and old.get("recipe") == recipe and not force:
        old_items = {it["id"]: it for it in old["items"]}
    todo, entries = [], {}
    for item in items:
        prev = old_items.get(item.id)
        path = root / item.path
        if (prev is not None and path.is_file() and path.stat().st_size == prev.get("bytes")
                and _sha256(path) == prev["sha256"]):
            entries[item.id] = prev
        else:
            todo.append(item)
    say(f"corpus {spec.name} at {root}: {len(items)} files, {len(entries)} verified, {len(todo)} to build")

    workers = workers or os.cpu_count() or 1
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small resamples in parallel threads: intra-op threads only contend
    try:
        _run(todo, root, spec, babble, workers, entries)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0

    manifest = {
        "format_version": FORMAT_VERSION,
        "name": spec.name,
        "recipe": recipe,
        "spec": dataclasses.asdict(spec),
        "seed": seed,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
        "built_files": len(todo),
        "debian_packages": _package_versions(),
        "sample_rate": SAMPLE_RATE,
        "speakers": {
            **{v.id: {"engine": v.engine, "voice": v.voice, "sex": v.sex, "accent": v.accent,
                      "role": v.role, "pitch": v.pitch, "speed": v.speed} for v in voices},
            **{s.speaker: {"engine": "human", "sex": s.sex, "languages":
                           [k for k, o in sp.REAL_SPEAKERS.items() if o.speaker == s.speaker],
                           "role": "heldout", "licence": s.licence}
               for s in sp.REAL_SPEAKERS.values() if s.language in spec.real_languages},
        },
        "licence_note": (
            "Synthetic speech: sentences CC0 (written for jaxprobe), audio generated with flite "
            "(CMU, BSD-style) and espeak-ng (GPL-3+). Real speech: Asterisk core sounds, CC-BY-SA-3.0 "
            "(Allison Smith en/es, June Wallack fr) and CC-BY-3.0 (Carlo Flora it, Maxim Topal/ivrvoice.ru ru); "
            "attribution per item. Real noise: ufoai-sound (GPL-2+/CC-BY/CC-BY-SA per file, from its "
            "debian/copyright) and OpenSFX (CC-BY-3.0/CC-BY-SA-3.0/CC0 per sound, credits per item). "
            "Redistribution of mixtures must keep these attributions and share-alike terms."),
        "items": [entries[it.id] for it in items],
    }
    _atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
    say(f"built {len(todo)} files in {seconds:.1f} s; manifest {root / 'manifest.json'}")
    return BuildReport(root=root, built=len(todo), kept=len(items) - len(todo), seconds=seconds, manifest=manifest)


# ----------------------------------------------------------------------------- loading

_READ_LOCK = threading.Lock()


class CorpusRecord(AudioRecord):
    """An :class:`AudioRecord` of the corpus whose waveform is read on first use.

    ``load_corpus`` verifies every file's checksum but decodes none; ``waveform`` reads the
    file once (under a lock, so threads share one read), checks its size and SHA-256 against
    the manifest again (unless the corpus was loaded with ``verify_checksums=False``) and
    decodes it with soundfile to the same float32 array an eager read gives. A file that
    vanished or changed since is a :class:`CorpusError` naming it. ``duration`` and
    ``num_samples`` come from the manifest without reading.
    """

    @property
    def waveform(self) -> np.ndarray:
        w = self.__dict__.get("_waveform")
        if w is None:
            with _READ_LOCK:
                w = self.__dict__.get("_waveform")
                if w is None:
                    w = self._read()
                    self.__dict__["_waveform"] = w
        return w

    @waveform.setter
    def waveform(self, value) -> None:  # the dataclass __init__ (and dataclasses.replace) set it
        self.__dict__["_waveform"] = value

    @property
    def loaded(self) -> bool:
        return self.__dict__.get("_waveform") is not None

    @property
    def num_samples(self) -> int:
        if self.loaded:
            return int(self.waveform.shape[0])
        return int(self.meta["num_samples"])

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate

    def _read(self) -> np.ndarray:
        import io

        import soundfile as sf

        path = Path(self.path)
        fix = (f"It was verified when the corpus was loaded; rebuild it with `jaxprobe corpus build --size "
               f"{self.__dict__.get('_size', 'default')}` (or load_corpus(build=True)) and load it again.")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CorpusError(f"Corpus file {path} (record {self.id!r}) cannot be read at first use: "
                              f"{e.strerror or e}. {fix}") from e
        want = self.meta.get("sha256")
        if self.__dict__.get("_verify", True) and want is not None:
            got = hashlib.sha256(data).hexdigest()
            if len(data) != self.meta.get("bytes") or got != want:
                raise CorpusError(f"Corpus file {path} (record {self.id!r}) changed since the corpus was "
                                  f"loaded: {len(data)} bytes, sha256 {got[:16]}..., expected "
                                  f"{self.meta.get('bytes')} bytes, sha256 {want[:16]}.... {fix}")
        try:
            x, rate = sf.read(io.BytesIO(data), dtype="float32")
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            raise CorpusError(f"Corpus file {path} (record {self.id!r}) cannot be decoded: {e}. {fix}") from e
        if rate != self.sample_rate or x.ndim != 1:
            raise CorpusError(f"Corpus file {path} (record {self.id!r}) holds {x.shape} samples at {rate} Hz; "
                              f"the manifest says mono at {self.sample_rate} Hz. {fix}")
        return x

    def __repr__(self) -> str:
        return (f"CorpusRecord(id={self.id!r}, speaker={self.speaker!r}, num_samples={self.num_samples}, "
                f"sample_rate={self.sample_rate}, path={self.path!r}, loaded={self.loaded})")

    def __reduce__(self):  # pickle the loaded samples if any, else only the pointer to the file
        return (_rebuild_record, (self.id, self.speaker, self.__dict__.get("_waveform"), self.sample_rate,
                                  self.transcript, self.path, self.meta, self.__dict__.get("_size", "default"),
                                  self.__dict__.get("_verify", True)))


def _rebuild_record(uid, speaker, waveform, sample_rate, transcript, path, meta, size, verify) -> CorpusRecord:
    rec = CorpusRecord(id=uid, speaker=speaker, waveform=waveform, sample_rate=sample_rate,
                       transcript=transcript, path=path, meta=meta)
    rec.__dict__.update(_size=size, _verify=verify)
    return rec


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """The loaded corpus.

    utterances : synthetic English speech with transcripts (``meta['split']`` in
        'train' / 'dev' / 'test'; 'test' speakers and sentences are unseen in 'train').
    real_speech : asterisk prompts by 4 human speakers in 5 languages (held out).
    noises : noise type -> recording (``meta['category']``, ``meta['synthetic']``).
    """

    root: Path
    manifest: dict
    utterances: list[AudioRecord]
    real_speech: list[AudioRecord]
    noises: dict[str, AudioRecord]

    def split(self, name: str) -> list[AudioRecord]:
        check_choice(name, "name", ("train", "dev", "test"), fn="Corpus.split")
        return [u for u in self.utterances if u.meta["split"] == name]

    def noise(self, name: str) -> AudioRecord:
        """The recording of one noise type; an unknown name is a KeyError listing the known ones."""
        if name not in self.noises:
            raise KeyError(f"Unknown noise type {name!r}; this corpus has {sorted(self.noises)}.")
        return self.noises[name]

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances + self.real_speech})


def load_corpus(
    cache_dir: str | os.PathLike | None = None,
    *,
    size: str | CorpusSpec = "default",
    build: bool = True,
    verify_checksums: bool = True,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Corpus:
    """Load the corpus, building or repairing it first when missing or corrupt (if ``build``).

    Returns a :class:`Corpus` of :class:`CorpusRecord` (mono float32 at 16 kHz), each read from
    its file on first use of its ``waveform`` (the checksums are verified here, before). With
    ``build=False`` a missing or corrupt corpus is a :class:`CorpusError` that says how to
    build it.
    """
    spec = _spec(size)
    root = corpus_root(cache_dir, spec)
    manifest = read_manifest(root)
    bad = ["manifest.json"] if manifest is None else (verify(root, manifest) if verify_checksums else [])
    stale = manifest is not None and manifest.get("recipe", "").split("/seed=")[0] != _recipe(spec)
    if bad or stale:
        if not build:
            what = "stale" if stale and not bad else f"missing or corrupt ({', '.join(bad[:3])}...)"
            raise CorpusError(f"The {spec.name} corpus at {root} is {what}. Build it with "
                              f"`jaxprobe corpus build --size {spec.name}` or load_corpus(build=True).")
        manifest = build_corpus(cache_dir, size=spec, workers=workers, log=log,
                                seed=manifest.get("seed", 0) if manifest else 0).manifest

    def record(it: dict) -> CorpusRecord:  # read on first use (CorpusRecord.waveform)
        meta = {k: v for k, v in it.items() if k not in ("id", "speaker", "text", "path")}
        return _rebuild_record(it["id"], it.get("speaker"), None, int(it.get("sample_rate", SAMPLE_RATE)),
                               it.get("text"), str(root / it["path"]), meta, spec.name, verify_checksums)

    recs = [record(it) for it in manifest["items"]]
    return Corpus(root=root, manifest=manifest,
                  utterances=[r for r in recs if r.meta["kind"] == "speech"],
                  real_speech=[r for r in recs if r.meta["kind"] == "real_speech"],
                  noises={r.id: r for r in recs if r.meta["kind"] == "noise"})
