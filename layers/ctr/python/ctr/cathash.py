"""Categorical values: 32-bit hashes written as 8 lowercase hex characters, and the
uint32 they are stored as in Parquet parts (schema version 2, `ctr.schema`).

The text form is what lines, API requests, rejects files and reports carry; the number
is what parts store and the feature transform looks up. The two are a bijection on what
the parser accepts (exactly 8 characters of `[0-9a-f]`, or empty for missing): every
such string is one uint32, and `to_hex` writes every uint32 back as the same 8
characters (zero-padded, lowercase). Uppercase or other lengths never reach a part --
the parser rejects them -- so nothing needs a rule for them here (tested).

Conversions work on Arrow buffers with a few NumPy passes, no per-value Python:

* `from_fixed8`: the CSV reader's `fixed_size_binary(8)` columns (8 bytes per value,
  contiguous) -> uint32, validating every byte on the way (`binascii.unhexlify` and a
  bit test for upper case).
* `from_hex` / `to_hex`: string columns <-> uint32 (reading version-1 parts, formatting
  for TSV and for people).
"""

from __future__ import annotations

import binascii
from collections.abc import Buffer

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_ZEROS = np.uint64(0x3030303030303030)          # "00000000"
_BIT_20 = np.uint64(0x2020202020202020)

# byte value -> its two lowercase hex characters, as one little-endian uint16
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), dtype="<u2")
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)
_HEX_VALUE[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16)


def _lanes(column: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    return [np.frombuffer(c.buffers()[1], dtype=np.uint64)[c.offset:c.offset + len(c)]
            for c in chunks if len(c)]


def _missing(column: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
    if column.null_count == 0:
        return None
    return np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def decode_values(text: Buffer) -> np.ndarray | None:
    """8-character values back to back (no separators) -> their uint32 as a big-endian
    array, or None when any character is not one of `[0-9a-f]`: `binascii.unhexlify`
    (C) decodes and refuses anything but `[0-9a-fA-F]`, and the bit test of
    `from_fixed8` refuses upper case."""
    view = memoryview(text).cast("B")
    if view.nbytes % 8:
        return None
    try:
        decoded = binascii.unhexlify(view)
    except binascii.Error:
        return None
    lanes = np.frombuffer(view, dtype=np.uint64)
    if np.bitwise_and(np.invert(lanes), _BIT_20).any():
        return None                                        # upper case
    return np.frombuffer(decoded, dtype=">u4")


def from_fixed8(columns: list[pa.ChunkedArray | pa.Array]) -> list[pa.Array] | None:
    """`fixed_size_binary(8)` columns of hex text -> uint32 columns (nulls kept), or None
    when any non-null value is not 8 characters of `[0-9a-f]`. All columns at once: one
    copy of their bytes, nulls filled with "00000000", then `binascii.unhexlify` (C:
    decodes, and refuses anything but `[0-9a-fA-F]`) and one bit test that refuses
    upper case (every character of `[0-9a-f]` has bit 0x20 set, `A-F` have not)."""
    if not columns:
        return []
    lengths = [len(c) for c in columns]
    lanes = [lane for c in columns for lane in _lanes(c)]
    x = np.concatenate(lanes) if lanes else np.empty(0, dtype=np.uint64)
    masks = [_missing(c) for c in columns]
    starts = np.r_[0, np.cumsum(lengths)]
    for start, mask in zip(starts[:-1], masks, strict=True):
        if mask is not None:                  # a null's bytes are unspecified
            np.putmask(x[start:start + mask.size], mask, _ZEROS)
    try:
        decoded = binascii.unhexlify(x)
    except binascii.Error:
        return None                           # a byte outside [0-9a-fA-F]
    np.invert(x, out=x)                       # (x is our copy: in place, no temporaries)
    np.bitwise_and(x, _BIT_20, out=x)
    if x.any():
        return None                           # upper case
    out = np.frombuffer(decoded, dtype=">u4").astype(np.uint32)
    return [pa.array(out[start:start + n], pa.uint32(), mask=mask)
            for start, n, mask in zip(starts[:-1], lengths, masks, strict=True)]


def hex_keys(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A categorical column -> (uint32 keys as int64, is_missing, is_valid).

    A uint32 column (a version-2 part) is its own keys: every non-null value is valid.
    A string column is read from the Arrow buffers: a value is valid when it is exactly
    8 lowercase hex characters; other non-missing strings are valid=False."""
    if pa.types.is_uint32(column.type):
        n = len(column)
        missing = _missing(column)
        missing = np.zeros(n, dtype=bool) if missing is None else missing
        keys = np.asarray(pc.fill_null(column, 0).to_numpy(), dtype=np.int64) if n else \
            np.zeros(0, dtype=np.int64)
        return keys, missing, ~missing
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.type != pa.string():
        arr = pc.cast(arr, pa.string())       # dictionary or large_string input
    n = len(arr)
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    keys = np.zeros(n, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    if n == 0 or missing.all():
        return keys, missing, valid
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset:arr.offset + n + 1]
    lengths = np.diff(offsets)
    rows = np.flatnonzero(lengths == 8)
    if rows.size == 0:
        return keys, missing, valid
    data = np.frombuffer(data_buf, dtype=np.uint8)
    if rows.size == n - int(missing.sum()) and not lengths[missing].any():
        # The usual case: every value is 8 bytes, nulls are empty -> one contiguous block.
        block = data[offsets[0]:offsets[0] + 8 * rows.size]
        decoded = decode_values(block)
        if decoded is not None:         # ... of valid values only (requests): 2x faster
            keys[rows] = decoded
            valid[rows] = True
            return keys, missing, valid
        chars = block.reshape(-1, 8)
    else:
        chars = data[offsets[rows][:, None] + np.arange(8)]
    digits = np.ascontiguousarray(np.take(_HEX_VALUE, chars))
    # Invalid characters map to 255: any high nibble set in the row's 8 digits.
    good = (digits.view(np.uint64).ravel() & np.uint64(0xF0F0F0F0F0F0F0F0)) == 0
    packed = (digits[:, 0::2] << 4) | digits[:, 1::2]          # 4 bytes, big-endian
    values = np.ascontiguousarray(packed).view(">u4").ravel()
    if good.all():
        keys[rows] = values
        valid[rows] = True
    else:
        keys[rows[good]] = values[good]
        valid[rows[good]] = True
    valid &= ~missing                 # a null's slot may hold bytes: it is still missing
    return keys, missing, valid


def from_hex(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A string column of valid values (8 lowercase hex characters or null) -> uint32.
    Raises ValueError on any other value: only validated text may be converted."""
    keys, missing, valid = hex_keys(column)
    present = ~missing
    if not np.array_equal(valid, present):
        bad = int(np.flatnonzero(present & ~valid)[0])
        raise ValueError(f"not a categorical hash (8 lowercase hex characters): "
                         f"{column[bad].as_py()!r}")
    return pa.array(keys.astype(np.uint32), pa.uint32(),
                    mask=missing if missing.any() else None)


def to_hex(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """uint32 -> string of 8 lowercase hex characters (zero-padded); nulls stay null
    (as empty strings)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    values = np.asarray(pc.fill_null(arr, 0).to_numpy(), dtype=">u4") if n else \
        np.zeros(0, dtype=">u4")
    chars = _HEX_PAIRS[values.view(np.uint8)]                    # 4 pairs per value
    present = None if arr.null_count == 0 else ~np.asarray(
        arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if present is None:
        offsets = np.arange(0, 8 * n + 1, 8, dtype=np.int32)
        data = chars.tobytes()
    else:
        offsets = np.r_[0, np.cumsum(present * 8)].astype(np.int32)
        data = chars.reshape(n, 4)[present].tobytes()
    validity = None if present is None else pa.array(present).buffers()[1]
    return pa.Array.from_buffers(pa.string(), n,
                                 [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=arr.null_count)
