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

Other official checkpoints follow the same order through a :class:`CheckpointSource` (its own
environment variables, cache sub-folder, pinned URL and sha256) and :func:`resolve_checkpoint`;
``GTCRN_SOURCES`` holds GTCRN's two (``vctk``: ``JAXPROBE_GTCRN_CHECKPOINT``,
``$JAXPROBE_CACHE/gtcrn/model_trained_on_vctk.tar``; ``dns3``: ``JAXPROBE_GTCRN_DNS3_CHECKPOINT``,
``$JAXPROBE_CACHE/gtcrn/model_trained_on_dns3.tar``).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CheckpointSource:
    """Where one official checkpoint comes from.

    Attributes
    ----------
    label : str
        Name in messages, e.g. "MUSE" or "GTCRN (vctk)".
    filename : str
        File name in the cache sub-folder (and in the download URL).
    subdir : str
        Cache sub-folder under ``$JAXPROBE_CACHE``.
    url, sha256 : str
        Pinned download URL and the hex digest every file must have.
    env_checkpoint, env_url : str
        Environment variables for a local file and for a URL override.
    own_weights : str
        How a caller skips the hash check for its own weights (words the checksum error).
    """

    label: str
    filename: str
    subdir: str
    url: str
    sha256: str
    env_checkpoint: str
    env_url: str
    own_weights: str = "pass sha256=None"


MUSE_SOURCE = CheckpointSource("MUSE", "g_best", "muse", OFFICIAL_URL, OFFICIAL_SHA256, ENV_CHECKPOINT, ENV_URL)
_GTCRN_URL = "https://raw.githubusercontent.com/Xiaobin-Rong/gtcrn/3862c44808dca492ea5a8a145d2dc2a1028d08c8/checkpoints/"
GTCRN_SOURCES: dict[str, CheckpointSource] = {
    "vctk": CheckpointSource(
        "GTCRN (vctk)", "model_trained_on_vctk.tar", "gtcrn", _GTCRN_URL + "model_trained_on_vctk.tar",
        "a0f0e04421d9fc1efe734d44191f5dc4b973ce59d6546af8d64ad9167e2a9944",
        "JAXPROBE_GTCRN_CHECKPOINT", "JAXPROBE_GTCRN_URL", "pass verify=False to load_gtcrn",
    ),
    "dns3": CheckpointSource(
        "GTCRN (dns3)", "model_trained_on_dns3.tar", "gtcrn", _GTCRN_URL + "model_trained_on_dns3.tar",
        "a630d992cf792daf4ce2bb5bcf9c4d389f740a8f09c6e0971184697fe6371b79",
        "JAXPROBE_GTCRN_DNS3_CHECKPOINT", "JAXPROBE_GTCRN_DNS3_URL", "pass verify=False to load_gtcrn",
    ),
}


def cache_dir(source: CheckpointSource = MUSE_SOURCE) -> Path:
    """The cache folder for a source's weights: ``$JAXPROBE_CACHE/<subdir>`` or
    ``~/.cache/jaxprobe/<subdir>`` (``muse`` by default)."""
    root = os.environ.get(ENV_CACHE)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "jaxprobe"
    return base / source.subdir


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checkpoint(
    path: str | os.PathLike,
    sha256: str | None = OFFICIAL_SHA256,
    *,
    source: CheckpointSource = MUSE_SOURCE,
) -> Path:
    """Return ``path`` as a Path if it exists and (unless ``sha256`` is None) has that sha256.

    Raises FileNotFoundError for a missing file and ChecksumError, naming the file and both
    hashes, for a mismatch. ``source`` only words the messages (MUSE by default).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{source.label} checkpoint {str(path)!r} does not exist. Pass the path of {source.filename}, set "
            f"{source.env_checkpoint}, or pass checkpoint=None to use the cache/download."
        )
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256.lower():
            raise ChecksumError(
                f"{source.label} checkpoint {str(path)!r} has sha256 {got}, expected {sha256.lower()}: the file is "
                "corrupt, truncated or a different checkpoint. From the command line: pass the official "
                f"{source.filename} with --checkpoint PATH (or {source.env_checkpoint}). Delete it to have the "
                f"official one downloaded again; from Python, {source.own_weights} to load your own weights."
            )
    return path


def download_checkpoint(
    url: str | None = None,
    dest: str | os.PathLike | None = None,
    *,
    sha256: str | None = OFFICIAL_SHA256,
    timeout: float = 60.0,
    source: CheckpointSource = MUSE_SOURCE,
) -> Path:
    """Fetch ``url`` to ``dest`` atomically, verifying its sha256 before the file appears.

    Parameters
    ----------
    url : str, optional
        ``http(s)://`` or ``file://`` URL; default ``$JAXPROBE_MUSE_URL`` or ``OFFICIAL_URL``
        (for another ``source``: its ``env_url``, then its ``url``).
    dest : path, optional
        Target file; default ``cache_dir(source) / source.filename``. Its folder is created.
    sha256 : str or None
        Expected hex digest (default: MUSE's, or ``source.sha256`` when a source is given); None
        skips the check (not recommended).
    source : CheckpointSource
        Which checkpoint (MUSE by default); gives the defaults above and the wording of errors.

    Returns
    -------
    Path of the verified file. On any failure (network, mismatch) nothing is left at ``dest``
    or under a temporary name.
    """
    if source is not MUSE_SOURCE and sha256 == OFFICIAL_SHA256:
        sha256 = source.sha256  # the default belongs to MUSE; another source brings its own
    url = url or os.environ.get(source.env_url) or source.url
    dest = Path(dest).expanduser() if dest is not None else cache_dir(source) / source.filename
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
                f"{source.env_url}) and try again."
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ChecksumError):
            raise
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError is also the open response; release its socket now
        raise ConnectionError(
            f"Could not download the {source.label} checkpoint from {url}: {getattr(exc, 'reason', exc)}. "
            f"Pass a local copy with --checkpoint PATH or the {source.env_checkpoint} environment "
            f"variable, or point {source.env_url} at a reachable mirror."
        ) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def resolve_checkpoint(
    source: CheckpointSource,
    checkpoint: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    verify: bool = True,
    download: bool = True,
) -> Path:
    """Find a source's checkpoint: the ``checkpoint`` argument, the source's ``env_checkpoint``
    variable, ``cache_dir(source) / source.filename``, then the download (``url`` overrides the
    source's). The file must have ``source.sha256`` unless ``verify=False`` (own weights)."""
    return _resolve(source, checkpoint, url=url, sha256=source.sha256 if verify else None, download=download)


def _resolve(source: CheckpointSource, checkpoint, *, url, sha256, download) -> Path:
    explicit = checkpoint if checkpoint is not None else os.environ.get(source.env_checkpoint) or None
    if explicit is not None:
        return verify_checkpoint(explicit, sha256, source=source)
    cached = cache_dir(source) / source.filename
    if cached.is_file():
        return verify_checkpoint(cached, sha256, source=source)
    if not download:
        raise FileNotFoundError(
            f"No {source.label} checkpoint: none given, {source.env_checkpoint} unset and {str(cached)!r} absent. "
            "Pass a path, or allow the download."
        )
    return download_checkpoint(url, cached, sha256=sha256, source=source)


def resolve_muse_checkpoint(
    checkpoint: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    sha256: str | None = OFFICIAL_SHA256,
    download: bool = True,
) -> Path:
    """Find the MUSE checkpoint (argument, env, cache, download) and verify it; see the module doc."""
    return _resolve(MUSE_SOURCE, checkpoint, url=url, sha256=sha256, download=download)
