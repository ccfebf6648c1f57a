"""The aligned staging copies behind zero-copy hand-over of numpy inputs: a buffer is
reused only when nothing (no view, no jax array aliasing it) refers to it any more."""
from __future__ import annotations

import gc

import jax
import numpy as np
import pytest

from jaxprobe import _validate as v


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(v, "_staging", [])
    return v._staging


def _unaligned(rng, shape=(512, 1024)):
    a = rng.normal(size=(shape[0] + 1,) + shape[1:]).astype(np.float32)
    for start in range(2):  # one of two row offsets (4 KiB apart... or not) is unaligned
        b = a[start:start + shape[0]]
        if b.ctypes.data % v.ALIGN:
            return b
    b = a.reshape(-1)[1:1 + np.prod(shape)].reshape(shape)  # a 4-byte shift always breaks alignment
    assert b.ctypes.data % v.ALIGN
    return b


def test_copy_is_aligned_and_equal(rng, pool):
    a = _unaligned(rng)
    out = v.aligned_view(a)
    assert out.ctypes.data % v.ALIGN == 0 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)
    assert len(pool) == 1


def test_buffer_in_use_is_never_handed_out_twice(rng, pool):
    a, b = _unaligned(rng), _unaligned(rng)
    x = v.aligned_view(a)
    part = x[10:20]  # a view keeps the buffer busy after x itself is gone
    del x
    y = v.aligned_view(b)
    assert not np.shares_memory(part, y)
    np.testing.assert_array_equal(part, a[10:20])
    j = jax.device_put(y, may_alias=True)  # so does a jax array aliasing it
    del y
    z = v.aligned_view(a)
    np.testing.assert_array_equal(np.asarray(j), b)
    assert not np.shares_memory(z, part)
    del part, j, z
    gc.collect()
    assert len(pool) == 3
    w = v.aligned_view(a)  # now idle buffers exist: one is reused, none is added
    assert len(pool) == 3
    np.testing.assert_array_equal(w, a)


def test_small_and_aligned_inputs_bypass_the_pool(rng, pool):
    small = rng.normal(size=(10, 10)).astype(np.float32)[:, 1:]
    np.testing.assert_array_equal(v.aligned_view(np.ascontiguousarray(small)[1:]), small[1:])
    aligned = v.aligned_view(_unaligned(rng))  # a staged array is itself aligned: returned as is
    assert v.aligned_view(aligned) is aligned
    assert len(pool) == 1
