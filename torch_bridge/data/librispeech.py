"""LibriSpeech: ``speaker/chapter/speaker-chapter-utt.flac`` with one
``speaker-chapter.trans.txt`` per chapter (``ID TRANSCRIPT`` lines). Files are 16 kHz."""
from __future__ import annotations

import os

from .record import AudioDataset, AudioError, Entry, require_dir


def _read_trans(path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise AudioError(f"{path}, line {n}: expected 'UTTERANCE-ID TRANSCRIPT'; got {line!r}.")
        out[parts[0]] = parts[1].strip()
    return out


class LibriSpeech(AudioDataset):
    """LibriSpeech utterances with transcripts, speaker and chapter ids.

    Parameters
    ----------
    root : path
        A subset folder (``test-clean``) or a folder above it (``LibriSpeech``); all
        ``*.flac`` below it are read.
    speakers : iterable of str, optional
        Keep only these speaker ids.
    """

    allowed_rates = (16000,)

    def __init__(self, root: str | os.PathLike, *, speakers=None):
        root = require_dir(root, "LibriSpeech")
        keep = {str(s) for s in speakers} if speakers is not None else None
        trans_cache: dict = {}
        entries = []
        for path in sorted(root.rglob("*.flac")):
            parts = path.stem.split("-")
            if len(parts) != 3:
                raise AudioError(f"{path} does not follow the LibriSpeech name SPEAKER-CHAPTER-UTT.flac.")
            spk, chap, _ = parts
            if keep is not None and spk not in keep:
                continue
            tpath = path.parent / f"{spk}-{chap}.trans.txt"
            if tpath not in trans_cache:
                if not tpath.is_file():
                    raise AudioError(f"{path} has no transcript file {tpath}.")
                trans_cache[tpath] = _read_trans(tpath)
            text = trans_cache[tpath].get(path.stem)
            if text is None:
                raise AudioError(f"{tpath} has no line for {path.stem} ({path}).")
            entries.append(Entry(id=path.stem, path=path, speaker=spk, transcript=text,
                                 meta={"chapter": chap}))
        super().__init__(entries)
