"""The predict API's API key on the local cloud: off by default (the session's stack),
and enforced by the emulator's API Gateway when a stack is deployed with
RequireApiKey=true (a second stack, deleted afterwards)."""

from __future__ import annotations

import dataclasses
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from ctr_infra.deploy import deploy
from ctr_infra.localcloud import CloudError


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    # Always the local cloud's http://127.0.0.1 API URL.
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def keyed(cloud) -> Iterator[dict[str, Any]]:
    cfg = dataclasses.replace(cloud.cfg, stack_name=f"{cloud.cfg.stack_name}-apikey")
    outputs = deploy(cfg, {"MlflowTrackingUri": cloud.mlflow_uri, "RequireApiKey": "true"})
    key = cloud.client("apigateway").get_api_key(apiKey=outputs["ApiKeyId"],
                                                 includeValue=True)["value"]
    yield {"url": outputs["LocalApiUrl"].rstrip("/"), "key": key}
    cloud.client("cloudformation").delete_stack(StackName=cfg.stack_name)


def test_the_default_stack_needs_no_key(cloud):
    status, body = get(cloud.api_url.rstrip("/") + "/health")
    assert status == 200, body
    assert "ApiKeyId" not in cloud.outputs


def test_with_require_api_key_a_request_needs_the_key(keyed):
    for path in ("/health", "/model-info", "/"):
        assert get(keyed["url"] + path)[0] == 403, path
        assert get(keyed["url"] + path, {"x-api-key": "not-the-key"})[0] == 403, path
    status, body = get(keyed["url"] + "/health", {"x-api-key": keyed["key"]})
    assert status == 200, body
    assert b'"status"' in body


def test_the_setting_cannot_flip_silently_on_an_existing_local_stack(cloud):
    with pytest.raises(CloudError, match="RequireApiKey is false"):
        deploy(cloud.cfg, {"MlflowTrackingUri": cloud.mlflow_uri, "RequireApiKey": "true"})
