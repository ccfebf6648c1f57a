"""DEMAND multichannel noise: one folder per environment holding ``ch01.wav`` ... ``ch16.wav``.

Environments are found anywhere under ``root`` (the official zips unpack to
``DKITCHEN/ch01.wav``). Files at 16 or 48 kHz are accepted; channel 1 is used by default.
The first letter of an environment names its DEMAND category.
"""
from __future__ import annotations

import os

from .record import AudioDataset, AudioError, Entry, check_int, require_dir

CATEGORIES = {"D": "domestic", "N": "nature", "O": "office", "P": "public", "S": "street",
              "T": "transportation"}


class Demand(AudioDataset):
    """DEMAND noise environments, one record per environment (speaker None).

    Parameters
    ----------
    root : path
        Folder holding the environment folders.
    channel : int in [1, 16]
        Microphone channel file ``chNN.wav`` to read (default 1).
    environments : iterable of str, optional
        Keep only these (``DKITCHEN``, ``STRAFFIC``, ...).
    """

    allowed_rates = (16000, 48000)

    def __init__(self, root: str | os.PathLike, *, channel: int = 1, environments=None):
        root = require_dir(root, "DEMAND")
        channel = check_int(channel, "channel", fn="Demand", low=1, high=16)
        keep = set(environments) if environments is not None else None
        entries = []
        env_dirs = sorted({p.parent for p in root.rglob("ch[0-9][0-9].wav")})
        for d in env_dirs:
            env = d.name
            if keep is not None and env not in keep:
                continue
            path = d / f"ch{channel:02d}.wav"
            if not path.is_file():
                raise AudioError(f"DEMAND environment {d} has no {path.name}; channel={channel} "
                                 "needs that file (DEMAND has ch01.wav ... ch16.wav).")
            entries.append(Entry(id=env, path=path, meta={
                "environment": env, "channel": channel,
                "category": CATEGORIES.get(env[:1], "unknown")}))
        if keep is not None:
            missing = keep - {e.id for e in entries}
            if missing:
                raise AudioError(f"DEMAND environments {sorted(missing)} not found under {root}; "
                                 f"found {[e.id for e in entries]}.")
        super().__init__(entries)
