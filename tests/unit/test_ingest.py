"""ctr.ingest: streaming uploads into raw/ (multipart, conditional), gunzip."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ctr import ingest
from ctr.errors import DataError, ValidationError
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3


def test_small_object_is_one_conditional_put() -> None:
    store = Store(MemoryS3(), "bucket")
    with ingest.ObjectWriter(store, "raw/a") as writer:
        writer.write(b"hello ")
        writer.write(b"world")
        assert writer.close() is True
    assert store.get("raw/a").body == b"hello world"
    with ingest.ObjectWriter(store, "raw/a") as again:
        again.write(b"other")
        assert again.close() is False                       # never replaces
    assert store.get("raw/a").body == b"hello world"


def test_large_object_is_a_multipart_upload_in_order() -> None:
    s3 = MemoryS3()
    store = Store(s3, "bucket")
    data = bytes(range(256)) * 4000                          # ~1 MB
    with ingest.ObjectWriter(store, "raw/big", part_size=100_000) as writer:
        for i in range(0, len(data), 33_333):
            writer.write(data[i:i + 33_333])
        assert writer.close() is True
    assert store.get("raw/big").body == data
    assert s3.uploads == {}


def test_multipart_onto_an_existing_key_is_aborted_not_replaced() -> None:
    s3 = MemoryS3()
    store = Store(s3, "bucket")
    store.put("raw/big", b"first")
    with ingest.ObjectWriter(store, "raw/big", part_size=10) as writer:
        writer.write(b"x" * 100)
        assert writer.close() is False
    assert store.get("raw/big").body == b"first"
    assert s3.uploads == {}                                   # aborted


def test_an_exception_aborts_the_multipart_upload() -> None:
    s3 = MemoryS3()
    store = Store(s3, "bucket")
    with pytest.raises(RuntimeError), ingest.ObjectWriter(store, "raw/x", part_size=10) as writer:
        writer.write(b"y" * 50)
        raise RuntimeError("source broke")
    assert s3.uploads == {} and not store.exists("raw/x")


def test_gunzip_chunks_handles_members_and_tiny_pieces() -> None:
    payload = b"line\n" * 10_000
    packed = gzip.compress(payload[:20_000]) + gzip.compress(payload[20_000:])
    pieces = [packed[i:i + 7] for i in range(0, len(packed), 7)]
    assert b"".join(ingest.gunzip_chunks(pieces)) == payload
    bomb = gzip.compress(b"\0" * 5_000_000)
    outputs = list(ingest.gunzip_chunks([bomb], max_out=1 << 20))
    assert max(len(o) for o in outputs) <= 1 << 20
    assert sum(len(o) for o in outputs) == 5_000_000
    with pytest.raises(DataError, match="not a valid gzip stream"):
        list(ingest.gunzip_chunks([b"not gzip at all"]))


def test_put_local_file_plain_gzip_and_decompressed(tmp_path: Path) -> None:
    store = Store(MemoryS3(), "bucket")
    text = b"0\t1\n" * 1000
    plain = tmp_path / "train.txt"
    plain.write_bytes(text)
    packed = tmp_path / "train2.txt.gz"
    packed.write_bytes(gzip.compress(text))

    first = ingest.put(store, str(plain))
    assert first == {"status": "uploaded", "key": "raw/local/train.txt", "bytes": len(text)}
    assert ingest.put(store, str(plain))["status"] == "exists"
    assert ingest.put(store, str(packed), source_name="kaggle")["key"] == \
        "raw/kaggle/train2.txt.gz"
    assert store.get("raw/kaggle/train2.txt.gz").body == packed.read_bytes()
    unpacked = ingest.put(store, str(packed), decompress=True)
    assert unpacked["key"] == "raw/local/train2.txt"
    assert store.get("raw/local/train2.txt").body == text


def test_put_refuses_a_different_object_under_the_same_key(tmp_path: Path) -> None:
    store = Store(MemoryS3(), "bucket")
    path = tmp_path / "train.txt"
    path.write_bytes(b"abc\n")
    ingest.put(store, str(path))
    path.write_bytes(b"abcdef\n")
    with pytest.raises(DataError, match="immutable"):
        ingest.put(store, str(path))


def test_put_from_another_s3_object() -> None:
    s3 = MemoryS3()
    store = Store(s3, "bucket")
    store.put("incoming/day1.txt", b"a\nb\n")                # MemoryS3 ignores the bucket
    result = ingest.put(store, "s3://landing/incoming/day1.txt")
    assert result["key"] == "raw/landing/day1.txt"
    assert store.get("raw/landing/day1.txt").body == b"a\nb\n"


def test_put_rejects_unknown_schemes_and_missing_files(tmp_path: Path) -> None:
    store = Store(MemoryS3(), "bucket")
    with pytest.raises(ValidationError, match="unsupported source"):
        ingest.put(store, "ftp://host/file")
    with pytest.raises(ValidationError, match="not a file"):
        ingest.put(store, str(tmp_path / "missing.txt"))
