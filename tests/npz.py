"""Read a whole ``.npz`` and close it (an open NpzFile left to the garbage collector raises a
ResourceWarning that pytest turns into an error at teardown)."""
from __future__ import annotations

import numpy as np


def load_npz(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
