"""The activation store: pooled activations on disk, per layer, in committed chunks.

Layout (a folder; every file is plain ``.npy`` or JSON)::

    store/
      manifest.json              written once, atomically; the store's identity
      plan/condition.npy         (n_items,) int32  row of manifest["plan"]["conditions"]
      plan/utterance.npy         (n_items,) int32  row of manifest["plan"]["utterances"]
      plan/window.npy            (n_items,) int32  window number within the utterance
      chunks/0000012/            chunk 12 = plan items [12·chunk_size, 13·chunk_size)
        <layer path>.npy         (n_chunk_items, *pooled shape), e.g. (8, 16, 128)
        meta.json                item range, per-item metadata (mixing info), and the size
                                 and xxh3_64 checksum of every layer file; sealed by a
                                 checksum of its own content
      locks/                     per-chunk writer locks (transient)

The plan (the full list of (condition, utterance, window) items, in order) is fixed when the
store is created; chunk ``k`` always holds the same items, so a chunk is either absent or
complete. A chunk is written into a temporary folder (``chunks/.tmp-…``) and committed by one
``rename`` of that folder, which POSIX makes atomic; a rename onto an existing chunk fails, so
two writers can never both commit one chunk. A killed writer leaves at most a temporary
folder, which readers ignore and the next writer of that chunk removes. Writers of disjoint
shards (chunk ``k`` belongs to shard ``k % n``) fill one store concurrently.

Reads are memory-mapped (``np.load(..., mmap_mode="r")``), so an analysis can stream a store
larger than RAM chunk by chunk (``iter_chunks``) or gather the rows it needs (``read``).

Integrity. The store never trusts what is on disk: each layer file is checked against the
size and checksum recorded at commit the first time a reader touches it, and a chunk's
``meta.json`` must match its own seal. A file not read yet is read once, whole, hashed and used
from that buffer, so checking adds no pass over the data (``bench/bench_store.py``: the checked
read path is no slower than the unchecked memory-mapped one; hashing alone costs about half a
warm read). A damaged, truncated or missing file raises
``StoreIntegrityError`` naming the file and how to repair it; ``verify`` (``jaxprobe store
verify DIR``) lists every problem; ``dump`` recomputes damaged chunks of its shard.
``content_key()`` digests every recorded checksum: results cached on a store are keyed on it.
Stores of version 1 (before checksums) are refused with how to upgrade (``rehash``).

The package (one on-disk format, cut by responsibility; names shared between its modules are
public within the package, and only the names below are its API):

* ``format.py``: the format's constants, ``Plan``, ``StoreIndex``, ``Chunk``, canonical JSON,
  file names and durable (fsync'd, temporary-name) writes;
* ``integrity.py``: checksums of files and seals of ``meta.json``, the store's errors and
  ``StoreCheck``;
* ``reader.py``: ``ActivationStore``, ``open_store``, and the whole-store ``verify_store`` and
  ``rehash_store`` (they open a store in the reader's legacy mode);
* ``writer.py``: ``StoreWriter`` (creates a store, commits chunks atomically).

numpy, xxhash and the standard library only: jaxprobe reads stores without torch.
"""
from __future__ import annotations

# also importable from here as before, outside __all__: FORMAT, VERSION, CHECKSUM, StoreSettingsError, file_digest
from .format import CHECKSUM, FORMAT, VERSION, Chunk, Plan, StoreIndex
from .integrity import LegacyStoreError, StoreCheck, StoreIntegrityError, StoreSettingsError, file_digest
from .reader import ActivationStore, open_store, rehash_store, verify_store
from .writer import StoreWriter

__all__ = ["ActivationStore", "Chunk", "LegacyStoreError", "Plan", "StoreCheck", "StoreIndex",
           "StoreIntegrityError", "StoreWriter", "open_store", "rehash_store", "verify_store"]
