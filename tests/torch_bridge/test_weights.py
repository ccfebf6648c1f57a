"""Checkpoint resolution and the verified download, against a loopback HTTP server and file:// URLs.

Nothing here touches the real network: every download URL points at 127.0.0.1 or a local file.
"""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
import urllib.error

import pytest

from torch_bridge import weights
from torch_bridge.weights import (
    OFFICIAL_SHA256,
    ChecksumError,
    download_checkpoint,
    resolve_muse_checkpoint,
    sha256_file,
    verify_checkpoint,
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder in JAXPROBE_CACHE, no checkpoint env, no URL override."""
    root = tmp_path / "cache"
    monkeypatch.setenv(weights.ENV_CACHE, str(root))
    monkeypatch.delenv(weights.ENV_CHECKPOINT, raising=False)
    monkeypatch.delenv(weights.ENV_URL, raising=False)
    return root / "muse"


@pytest.fixture
def corrupt(tmp_path, muse_dir):
    """A copy of g_best with one byte flipped in the middle."""
    data = bytearray((muse_dir / "g_best").read_bytes())
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "g_best_corrupt"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server over a served/ folder; yields (base_url, folder, request_log)."""
    root = tmp_path / "served"
    root.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet, but remember the requests
            log.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_official_file_is_accepted(muse_dir):
    assert sha256_file(muse_dir / "g_best") == OFFICIAL_SHA256
    assert verify_checkpoint(muse_dir / "g_best") == muse_dir / "g_best"


def test_corrupt_file_is_rejected_naming_file_and_hashes(corrupt):
    with pytest.raises(ChecksumError) as err:
        verify_checkpoint(corrupt)
    msg = str(err.value)
    assert str(corrupt) in msg and OFFICIAL_SHA256 in msg and sha256_file(corrupt) in msg


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        verify_checkpoint(tmp_path / "nope")


def test_resolution_order_argument_then_env_then_cache(muse_dir, corrupt, cache, monkeypatch):
    # argument wins over the env variable
    monkeypatch.setenv(weights.ENV_CHECKPOINT, str(corrupt))
    assert resolve_muse_checkpoint(muse_dir / "g_best", download=False) == muse_dir / "g_best"
    # env variable is used (and verified) when no argument is given
    with pytest.raises(ChecksumError, match="g_best_corrupt"):
        resolve_muse_checkpoint(download=False)
    monkeypatch.delenv(weights.ENV_CHECKPOINT)
    # then the cache: absent and download forbidden -> clear error
    with pytest.raises(FileNotFoundError, match="JAXPROBE_MUSE_CHECKPOINT"):
        resolve_muse_checkpoint(download=False)
    cache.mkdir(parents=True)
    shutil.copy(muse_dir / "g_best", cache / "g_best")
    assert resolve_muse_checkpoint(download=False) == cache / "g_best"


def test_corrupt_cache_is_rejected(corrupt, cache):
    cache.mkdir(parents=True)
    shutil.copy(corrupt, cache / "g_best")
    with pytest.raises(ChecksumError, match="Delete it"):
        resolve_muse_checkpoint(url="http://127.0.0.1:9/unused")


def test_fetch_over_loopback_http_is_verified_and_cached(muse_dir, cache, server):
    base, served, log = server
    shutil.copy(muse_dir / "g_best", served / "g_best")
    path = resolve_muse_checkpoint(url=f"{base}/g_best")
    assert path == cache / "g_best"
    assert sha256_file(path) == OFFICIAL_SHA256
    assert _leftovers(cache) == ["g_best"]  # no temporary file left behind
    assert log == ["/g_best"]
    # second resolution hits the cache, not the server
    (served / "g_best").unlink()
    assert resolve_muse_checkpoint(url=f"{base}/g_best") == path
    assert log == ["/g_best"]


def test_url_from_environment(muse_dir, cache, server, monkeypatch):
    base, served, log = server
    shutil.copy(muse_dir / "g_best", served / "g_best")
    monkeypatch.setenv(weights.ENV_URL, f"{base}/g_best")
    assert sha256_file(resolve_muse_checkpoint()) == OFFICIAL_SHA256
    assert log == ["/g_best"]


def test_mismatching_download_is_rejected_and_nothing_is_left(corrupt, cache, server):
    base, served, _ = server
    shutil.copy(corrupt, served / "g_best")
    with pytest.raises(ChecksumError) as err:
        resolve_muse_checkpoint(url=f"{base}/g_best")
    assert OFFICIAL_SHA256 in str(err.value) and sha256_file(corrupt) in str(err.value)
    assert _leftovers(cache) == []


def test_http_error_leaves_nothing(cache, server):
    base, _, _ = server
    with pytest.raises(ConnectionError, match="Could not download the MUSE checkpoint.*--checkpoint") as info:
        resolve_muse_checkpoint(url=f"{base}/missing")
    assert isinstance(info.value.__cause__, urllib.error.HTTPError)
    assert _leftovers(cache) == []


def test_file_url_download(muse_dir, tmp_path):
    dest = tmp_path / "out" / "g_best"
    got = download_checkpoint((muse_dir / "g_best").as_uri(), dest)
    assert got == dest and sha256_file(dest) == OFFICIAL_SHA256
