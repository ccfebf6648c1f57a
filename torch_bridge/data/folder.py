"""A generic folder of audio files (wav, flac, ogg; searched recursively), with an optional
transcript CSV whose header has ``file`` (path relative to the folder, or the file stem),
``transcript`` and optionally ``speaker``."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .record import AUDIO_SUFFIXES, AudioDataset, AudioError, Entry, require_dir


class AudioFolder(AudioDataset):
    """Every audio file under ``root``; ids are paths relative to root without suffix.

    Parameters
    ----------
    root : path
    transcripts : path, optional
        CSV with columns ``file``, ``transcript`` [, ``speaker``]; each row must match a file.
    allowed_rates : tuple of int, optional
        Reject files at other rates (default: any rate, resampled to 16 kHz).
    channel : int, optional
        1-based channel of multichannel files (default: multichannel is an error).
    """

    def __init__(self, root: str | os.PathLike, *, transcripts: str | os.PathLike | None = None,
                 allowed_rates: tuple[int, ...] | None = None, channel: int | None = None):
        root = require_dir(root, "audio folder")
        self.allowed_rates = allowed_rates
        self.channel = channel
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        by_key: dict[str, Path] = {}
        for p in paths:
            rel = p.relative_to(root).with_suffix("").as_posix()
            by_key[rel] = p
        rows = _read_csv(Path(transcripts), by_key) if transcripts is not None else {}
        entries = [Entry(id=rel, path=p, speaker=rows.get(rel, {}).get("speaker"),
                         transcript=rows.get(rel, {}).get("transcript"))
                   for rel, p in by_key.items()]
        super().__init__(entries)


def _read_csv(path: Path, by_key: dict[str, Path]) -> dict[str, dict]:
    if not path.is_file():
        raise FileNotFoundError(f"Transcript CSV {path} does not exist.")
    stems = {}
    for rel in by_key:
        stems.setdefault(Path(rel).name, []).append(rel)
    out = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        if not {"file", "transcript"} <= cols:
            raise AudioError(f"{path} must have a header with 'file' and 'transcript' columns "
                             f"(optional 'speaker'); got {sorted(cols)}.")
        for n, row in enumerate(reader, 2):
            key = Path(row["file"]).with_suffix("").as_posix()
            if key not in by_key:
                cands = stems.get(key, [])
                if len(cands) != 1:
                    raise AudioError(f"{path}, line {n}: file {row['file']!r} matches "
                                     f"{'no' if not cands else 'more than one'} audio file under the folder.")
                key = cands[0]
            out[key] = {"transcript": row["transcript"].strip(),
                        "speaker": (row.get("speaker") or "").strip() or None}
    return out
