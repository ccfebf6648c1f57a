"""Where model weights come from: a local path, or a verified download into a cache folder.

The official MUSE checkpoint ``g_best`` (MIT licence, copyright 2024 Zizhen Lin) is resolved in
this order:

1. the ``checkpoint`` argument;
2. the environment variable ``JAXPROBE_MUSE_CHECKPOINT``;
3. the cache file ``$JAXPROBE_CACHE/muse/g_best`` (default cache ``~/.cache/jaxprobe``);
4. a download from the pinned commit of the official repository (``OFFICIAL_URL``; override with
   the ``url`` argument or ``JAXPROBE_MUSE_URL``, e.g. a mirror or a ``file://`` URL) into the cache.

Every file is checked against the pinned sha256 before use unless the caller passes
``sha256=None`` (own weights). A download is written to a temporary name in the cache folder,
hashed while it streams, and renamed into place only when the hash matches, so an interrupted or
corrupt download never leaves a file that looks finished.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from torch_bridge.errors import UserError

OFFICIAL_URL = (
    "https://raw.githubusercontent.com/huaidanquede/MUSE-Speech-Enhancement/"
    "38dfcb1ef545572fdc2e5c8aadefab9959ab9b6f/paper_result/g_best"
)
OFFICIAL_SHA256 = "971e8940511e094aec933ca76f5cdf30c00a088c4966703b75777600e93e196a"
ENV_CHECKPOINT = "JAXPROBE_MUSE_CHECKPOINT"
ENV_URL = "JAXPROBE_MUSE_URL"
ENV_CACHE = "JAXPROBE_CACHE"
_CHUNK = 1 << 20


class ChecksumError(UserError, ValueError):
    """A weights file whose sha256 is not the expected one (corrupt, truncated or different)."""


def cache_dir() -> Path:
    """The cache folder for MUSE weights: ``$JAXPROBE_CACHE/muse`` or ``~/.cache/jaxprobe/muse``."""
    root = os.environ.get(ENV_CACHE)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "jaxprobe"
    return base / "muse"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checkpoint(path: str | os.PathLike, sha256: str | None = OFFICIAL_SHA256) -> Path:
    """Return ``path`` as a Path if it exists and (unless ``sha256`` is None) has that sha256.

    Raises FileNotFoundError for a missing file and ChecksumError, naming the file and both
    hashes, for a mismatch.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"MUSE checkpoint {str(path)!r} does not exist. Pass the path of g_best, set "
            f"{ENV_CHECKPOINT}, or pass checkpoint=None to use the cache/download."
        )
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256.lower():
            raise ChecksumError(
                f"MUSE checkpoint {str(path)!r} has sha256 {got}, expected {sha256.lower()}: the file is "
                "corrupt, truncated or a different checkpoint. From the command line: pass the official "
                "g_best with --checkpoint PATH (or JAXPROBE_MUSE_CHECKPOINT). Delete it to have the official "
                "one downloaded again; from Python, sha256=None loads your own weights."
            )
    return path


def download_checkpoint(
    url: str | None = None,
    dest: str | os.PathLike | None = None,
    *,
    sha256: str | None = OFFICIAL_SHA256,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``dest`` atomically, verifying its sha256 before the file appears.

    Parameters
    ----------
    url : str, optional
        ``http(s)://`` or ``file://`` URL; default ``$JAXPROBE_MUSE_URL`` or ``OFFICIAL_URL``.
    dest : path, optional
        Target file; default ``cache_dir() / "g_best"``. Its folder is created.
    sha256 : str or None
        Expected hex digest; None skips the check (not recommended).

    Returns
    -------
    Path of the verified file. On any failure (network, mismatch) nothing is left at ``dest``
    or under a temporary name.
    """
    url = url or os.environ.get(ENV_URL) or OFFICIAL_URL
    dest = Path(dest).expanduser() if dest is not None else cache_dir() / "g_best"
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = h.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise ChecksumError(
                f"Download of {url} for {str(dest)!r} has sha256 {got}, expected {sha256.lower()}; "
                "the file was discarded. Check the URL (or the mirror in "
                f"{ENV_URL}) and try again."
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ChecksumError):
            raise
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError is also the open response; release its socket now
        raise ConnectionError(
            f"Could not download the MUSE checkpoint from {url}: {getattr(exc, 'reason', exc)}. "
            "Pass a local copy with --checkpoint PATH or the JAXPROBE_MUSE_CHECKPOINT environment "
            f"variable, or point {ENV_URL} at a reachable mirror."
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def resolve_muse_checkpoint(
    checkpoint: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    sha256: str | None = OFFICIAL_SHA256,
    download: bool = True,
) -> Path:
    """Find the MUSE checkpoint (argument, env, cache, download) and verify it; see the module doc."""
    explicit = checkpoint if checkpoint is not None else os.environ.get(ENV_CHECKPOINT) or None
    if explicit is not None:
        return verify_checkpoint(explicit, sha256)
    cached = cache_dir() / "g_best"
    if cached.is_file():
        return verify_checkpoint(cached, sha256)
    if not download:
        raise FileNotFoundError(
            f"No MUSE checkpoint: none given, {ENV_CHECKPOINT} unset and {str(cached)!r} absent. "
            "Pass a path, or allow the download."
        )
    return download_checkpoint(url, cached, sha256=sha256)
