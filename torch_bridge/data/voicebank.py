"""VoiceBank clean speech (the VoiceBank-DEMAND test/train sets): a folder of ``pNNN_MMM.wav``.

The 16 kHz and the original 48 kHz releases are both accepted and returned at 16 kHz.
Transcripts are read from an optional folder of ``pNNN_MMM.txt`` files (``testset_txt``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .record import AudioDataset, AudioError, Entry, require_dir

_NAME = re.compile(r"^(p\d{3})_(\d{3})$")


class VoiceBank(AudioDataset):
    """VoiceBank clean utterances.

    Parameters
    ----------
    root : path
        Folder holding ``pNNN_MMM.wav`` (e.g. ``clean_testset_wav_16k``).
    transcripts : path, optional
        Folder holding ``pNNN_MMM.txt``; every wav must then have one.
    speakers : iterable of str, optional
        Keep only these speakers (``p232``, ``p257``).
    """

    allowed_rates = (16000, 48000)

    def __init__(self, root: str | os.PathLike, *, transcripts: str | os.PathLike | None = None,
                 speakers=None):
        root = require_dir(root, "VoiceBank")
        txt_dir = require_dir(transcripts, "VoiceBank transcript") if transcripts is not None else None
        keep = set(speakers) if speakers is not None else None
        entries = []
        for path in sorted(root.glob("*.wav")):
            m = _NAME.match(path.stem)
            if not m:
                raise AudioError(f"{path} does not follow the VoiceBank name pattern pNNN_MMM.wav; "
                                 "move it out of the folder or use AudioFolder for free-form names.")
            if keep is not None and m.group(1) not in keep:
                continue
            text = None
            if txt_dir is not None:
                txt = Path(txt_dir) / f"{path.stem}.txt"
                if not txt.is_file():
                    raise AudioError(f"{path} has no transcript {txt}; every utterance needs one when "
                                     "transcripts= is given.")
                text = txt.read_text(encoding="utf-8").strip()
            entries.append(Entry(id=path.stem, path=path, speaker=m.group(1), transcript=text))
        super().__init__(entries)
