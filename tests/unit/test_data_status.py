"""ctr.data_status (`ctr data status`): where the data stands, read from the bucket."""

from __future__ import annotations

import gzip

from ctr import aggregate, chunking, data_status, layout
from ctr.storage import Store
from ctr_infra.invariants import source_with_rejects
from ctr_infra.memory_s3 import MemoryS3


def _store() -> Store:
    return Store(MemoryS3(), "bucket")


def test_every_source_state_chunks_pending_parts_and_rejects() -> None:
    store = _store()
    good = source_with_rejects(300, seed=1, bad_every=97)          # 303 lines, 3 malformed
    store.put("raw/s/1-consumed.txt", good)
    store.put("raw/s/2-broken.txt.gz", gzip.compress(good)[:200])
    store.put("raw/s/3-consuming.txt", source_with_rejects(500, seed=2))
    store.put("raw/s/4-waiting.txt", b"x\n")
    chunking.cut_chunk(store, 400)            # all of 1 (303 lines)
    chunking.cut_chunk(store, 400)            # 2 quarantined, 400 lines of 3
    aggregate.aggregate(store, [0], max_reject_share=0.5)           # chunk 0 -> part 0

    doc = data_status.status(store)

    states = {s["key"]: s for s in doc["sources"]}
    assert {k: s["state"] for k, s in states.items()} == {
        "raw/s/1-consumed.txt": "consumed", "raw/s/2-broken.txt.gz": "quarantined",
        "raw/s/3-consuming.txt": "consuming", "raw/s/4-waiting.txt": "waiting"}
    assert states["raw/s/1-consumed.txt"]["lines_cut"] == 303
    assert "truncated gzip stream" in states["raw/s/2-broken.txt.gz"]["reason"]
    assert states["raw/s/3-consuming.txt"]["lines_cut"] == 400
    assert 0 < states["raw/s/3-consuming.txt"]["bytes_cut"] < states["raw/s/3-consuming.txt"][
        "size"]
    assert doc["chunks"] == 2 and doc["chunks_pending"] == [1] and doc["parts"] == 1
    assert doc["rejected_lines"] == 3 and doc["quarantined"] == 1

    text = "\n".join(data_status.format_status(doc))
    assert "QUARANTINED" in text and "raw/s/2-broken.txt.gz" in text
    assert "1 waiting for aggregation: [1]" in text and "3 lines in 1 files" in text


def test_an_empty_bucket_says_what_to_do() -> None:
    doc = data_status.status(_store())
    assert doc["sources"] == [] and doc["chunks"] == 0
    assert "ctr data put" in "\n".join(data_status.format_status(doc))


def test_a_quarantined_object_removed_from_raw_is_still_listed() -> None:
    store = _store()
    store.put("raw/s/bad.txt.gz", b"not gzip at all\n" * 10)
    chunking.cut_chunk(store, 10)
    store.s3.delete_object(Bucket="bucket", Key="raw/s/bad.txt.gz")
    (entry,) = data_status.status(store)["sources"]
    assert entry["state"] == "quarantined" and entry["present"] is False
    assert layout.CHUNKS_PREFIX not in "".join(store.s3.objects)
