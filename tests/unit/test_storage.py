"""The S3 client factory: the test-only throttling hook is inert by default, and when
configured answers S3 errors before anything is sent, so botocore's retries and
Store's error mapping run as they would against a throttling S3."""

from __future__ import annotations

from typing import Any

import botocore.retries.adaptive
import botocore.retries.standard
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from ctr import faults
from ctr.errors import TransientError
from ctr.storage import Store, make_s3_client


class _Empty:
    def stream(self, **_: Any) -> Any:
        yield b""


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """A real boto3 S3 client whose 'network' is a handler counting what reaches it."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "test")
    monkeypatch.setenv("CTR_FAULTS_DIR", str(tmp_path))
    # no backoff or rate-limiter sleeps in unit tests (the retry decisions are unchanged)
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount",
                        lambda self, context: 0)
    monkeypatch.setattr(botocore.retries.adaptive.ClientRateLimiter, "on_sending_request",
                        lambda self, request, **kwargs: None)

    def make() -> tuple[Any, list[str]]:
        client = make_s3_client(endpoint_url="http://127.0.0.1:9", region="us-east-1")
        sent: list[str] = []

        def network(request: Any) -> AWSResponse:
            sent.append(request.method)
            return AWSResponse(request.url, 200, {"ETag": '"e"', "Content-Length": "0"},
                               _Empty())

        monkeypatch.setattr(client._endpoint.http_session, "send", network)
        return client, sent
    return make


def test_without_ctr_faults_the_client_sends_every_request(s3, monkeypatch):
    monkeypatch.delenv("CTR_FAULTS", raising=False)
    client, sent = s3()
    resp = client.head_object(Bucket="b", Key="k")
    assert sent == ["HEAD"]
    assert resp["ResponseMetadata"]["RetryAttempts"] == 0


def test_other_fault_points_leave_the_client_untouched(s3, monkeypatch):
    monkeypatch.setenv("CTR_FAULTS", "chunk.after_write=crash*1")
    client, sent = s3()
    client.head_object(Bucket="b", Key="k")
    assert sent == ["HEAD"]


def test_slowdown_for_a_while_is_absorbed_by_botocore_retries(s3, monkeypatch, tmp_path):
    monkeypatch.setenv("CTR_FAULTS", f"{faults.S3_REQUEST}=SlowDown*3")
    client, sent = s3()
    resp = client.head_object(Bucket="b", Key="k")
    assert sent == ["HEAD"]                               # the 4th attempt went out
    assert resp["ResponseMetadata"]["RetryAttempts"] == 3
    assert len(list(tmp_path.iterdir())) == 3             # three injected 503s
    client.head_object(Bucket="b", Key="k")
    assert sent == ["HEAD", "HEAD"]                       # over: requests pass again


def test_slowdown_longer_than_botocore_retries_is_a_transient_error(s3, monkeypatch):
    monkeypatch.setenv("CTR_FAULTS", f"{faults.S3_REQUEST}=SlowDown*30")
    client, sent = s3()
    with pytest.raises(ClientError) as caught:
        client.put_object(Bucket="b", Key="k", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "SlowDown"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # Config max_attempts=8 counts retries: 9 attempts, every one answered 503
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 8
    with pytest.raises(TransientError, match="SlowDown"):
        Store(client, "b").get("k")                       # mapped for the state machine
    with pytest.raises(TransientError, match="throttling"):
        Store(client, "b").put_if_absent("k", b"x")
    assert sent == []


@pytest.mark.parametrize("call", [
    lambda store: store.get_range("k", 0, 9),
    lambda store: list(store.list_keys("chunks/")),
    lambda store: store.put("k", b"x"),
    lambda store: store.delete("k"),
], ids=["get_range", "list_keys", "put", "delete"])
def test_every_store_call_maps_lasting_throttling_to_a_transient_error(s3, monkeypatch, call):
    monkeypatch.setenv("CTR_FAULTS", f"{faults.S3_REQUEST}=SlowDown*30")
    client, sent = s3()
    with pytest.raises(TransientError, match="SlowDown"):
        call(Store(client, "b"))
    assert sent == []


# --- Store.stream: ranged GETs pinned to one ETag, a broken-off body fetched again ----

class _BreakingS3:
    """MemoryS3 whose GET bodies break off (ResponseStreamingError) `breaks` times,
    and which can replace the object after the first GET."""

    def __init__(self, breaks: int = 0, replace_after_first: bool = False) -> None:
        from ctr_infra.memory_s3 import MemoryS3

        self.inner, self.breaks, self.replace = MemoryS3(), breaks, replace_after_first
        self.ranges: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ResponseStreamingError

        answer = self.inner.get_object(**kwargs)
        self.ranges.append(kwargs.get("Range", ""))
        if self.replace:
            self.replace = False
            self.inner.put_object(Bucket=kwargs["Bucket"], Key=kwargs["Key"], Body=b"new")
        if self.breaks:
            self.breaks -= 1

            class Broken:
                def read(self) -> bytes:
                    raise ResponseStreamingError(error=ConnectionResetError(104, "reset"))
            answer["Body"] = Broken()
        return answer


DATA = bytes(range(256)) * 40          # 10,240 bytes


def _stream_store(**kwargs: Any) -> tuple[Store, _BreakingS3]:
    s3 = _BreakingS3(**kwargs)
    store = Store(s3, "bucket")
    store.put("raw/big.gz", DATA)
    return store, s3


def test_stream_reads_the_object_in_ranges_pinned_to_its_etag():
    store, s3 = _stream_store()
    blocks = list(store.stream("raw/big.gz", range_bytes=4096))
    assert b"".join(blocks) == DATA
    assert [len(b) for b in blocks] == [4096, 4096, 2048]
    assert s3.ranges == ["bytes=0-4095", "bytes=4096-8191", "bytes=8192-10239"]


def test_a_range_whose_body_breaks_off_is_fetched_again():
    store, s3 = _stream_store(breaks=2)
    assert b"".join(store.stream("raw/big.gz", range_bytes=4096)) == DATA
    assert s3.ranges[:3] == ["bytes=0-4095"] * 3


def test_a_range_that_keeps_breaking_is_a_transient_error():
    store, _ = _stream_store(breaks=10)
    with pytest.raises(TransientError, match=r"failed 4 times \(last: broke off"):
        list(store.stream("raw/big.gz", range_bytes=4096))


def test_an_object_replaced_while_it_is_read_is_a_conflict_not_a_mix():
    from ctr.errors import ConflictError, NotFoundError

    store, _ = _stream_store(replace_after_first=True)
    with pytest.raises(ConflictError, match="changed while it was being read"):
        list(store.stream("raw/big.gz", range_bytes=4096))
    with pytest.raises(NotFoundError):
        list(store.stream("raw/none"))
