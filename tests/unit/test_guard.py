"""The overlap guard: one holder at a time, re-entrant for retries, expiry takeover,
release only by the holder, races resolved by conditional writes."""

from __future__ import annotations

import threading

from ctr import guard
from ctr.storage import Store
from ctr_infra.memory_s3 import MemoryS3


def store() -> Store:
    return Store(MemoryS3(), "b")


def test_first_acquires_second_is_a_noop_with_reason():
    s = store()
    a = guard.acquire(s, "exec-a", 60, now=1000)
    b = guard.acquire(s, "exec-b", 60, now=1010)
    assert a.acquired and not b.acquired
    assert b.holder == "exec-a" and "exec-a holds the pipeline lease" in b.reason


def test_retry_of_the_holder_reacquires():
    s = store()
    guard.acquire(s, "exec-a", 60, now=1000)
    again = guard.acquire(s, "exec-a", 60, now=1005)
    assert again.acquired and "retry" in again.reason


def test_expired_lease_is_taken_over():
    s = store()
    guard.acquire(s, "dead-exec", 60, now=1000)
    taken = guard.acquire(s, "exec-b", 60, now=1061)
    assert taken.acquired and "dead-exec" in taken.reason


def test_release_by_holder_frees_it_and_others_cannot_release():
    s = store()
    guard.acquire(s, "exec-a", 60, now=1000)
    assert not guard.release(s, "exec-b").released
    assert not guard.acquire(s, "exec-b", 60, now=1001).acquired
    assert guard.release(s, "exec-a").released
    assert guard.acquire(s, "exec-b", 60, now=1002).acquired
    assert not guard.release(s, "exec-a").released  # double release is a no-op


def test_many_concurrent_acquirers_exactly_one_wins():
    s = store()
    results = []
    barrier = threading.Barrier(8)

    def go(i):
        barrier.wait()
        results.append(guard.acquire(s, f"exec-{i}", 60, now=5000))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.acquired for r in results) == 1


def test_results_are_the_json_the_state_machine_reads():
    s = store()
    taken = guard.acquire(s, "exec-a", 60, now=1000).to_payload()
    assert taken == {"acquired": True, "holder": "exec-a",
                     "expires_at": "1970-01-01T00:17:40+00:00", "reason": "lease was free",
                     "generation": 1}
    busy = guard.acquire(s, "exec-b", 60, now=1001).to_payload()
    assert busy == {"acquired": False, "holder": "exec-a",
                    "expires_at": "1970-01-01T00:17:40+00:00",
                    "reason": "execution exec-a holds the pipeline lease until "
                              "1970-01-01T00:17:40+00:00; this run is a no-op"}
    assert guard.release(s, "exec-a").to_payload() == {"released": True, "reason": "released"}
