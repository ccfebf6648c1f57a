"""MUSAN: ``noise/``, ``music/`` and ``speech/`` folders, each with source subfolders of 16 kHz wavs."""
from __future__ import annotations

import os

from .record import AudioDataset, AudioError, Entry, require_dir

KINDS = ("noise", "music", "speech")


class Musan(AudioDataset):
    """MUSAN recordings of the chosen kinds.

    Parameters
    ----------
    root : path
        The ``musan`` folder.
    kinds : tuple of {'noise', 'music', 'speech'}
        Which parts to read (default: noise only).

    Record ids are ``kind/source/stem``; ``meta`` holds ``kind`` and ``source``. Speech
    records carry the file stem as speaker (MUSAN names one speaker per file).
    """

    allowed_rates = (16000,)

    def __init__(self, root: str | os.PathLike, *, kinds=("noise",)):
        root = require_dir(root, "MUSAN")
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        for k in kinds:
            if k not in KINDS:
                raise ValueError(f"The 'kinds' parameter of Musan must hold values in {KINDS}; got {k!r}.")
        entries = []
        for kind in kinds:
            kdir = root / kind
            if not kdir.is_dir():
                raise AudioError(f"MUSAN root {root} has no {kind}/ folder; pass the 'musan' folder.")
            for path in sorted(kdir.rglob("*.wav")):
                source = path.parent.relative_to(kdir).as_posix()
                entries.append(Entry(
                    id=f"{kind}/{source}/{path.stem}", path=path,
                    speaker=path.stem if kind == "speech" else None,
                    meta={"kind": kind, "source": source}))
        super().__init__(entries)
