"""The REST adapter's Accept header and item restoration, against a fake API client."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest
from kubernetes_asyncio import client

from kposture.ingest import kubeapi


class FakeContent:
    """The body of a watch response, one line at a time."""

    def __init__(self, lines: list[bytes]) -> None:
        self._lines = list(lines)

    async def readline(self) -> bytes:
        return self._lines.pop(0) if self._lines else b""


class FakeResponse:
    """Just enough of an ``aiohttp.ClientResponse``."""

    def __init__(self, body: bytes, lines: list[bytes] | None = None) -> None:
        self.status = 200
        self._body = body
        self.content = FakeContent(lines or [])

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeClient:
    """Records each request's Accept header and answers with the next canned response."""

    def __init__(self, *responses: FakeResponse) -> None:
        self.accepts: list[str] = []
        self._responses = list(responses)

    async def call_api(self, path: str, method: str, **kwargs: Any) -> FakeResponse:
        self.accepts.append(kwargs["header_params"]["Accept"])
        return self._responses.pop(0)

    async def close(self) -> None:
        pass


def _api(fake: FakeClient) -> kubeapi.RestApi:
    return kubeapi.RestApi(cast(client.ApiClient, fake), name="c1")


def _partial(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"},
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/secrets", ("v1", "Secret")),
        ("/api/v1/configmaps", ("v1", "ConfigMap")),
        ("/api/v1/namespaces/ns/secrets", ("v1", "Secret")),
        ("/api/v1/namespaces/ns/configmaps", ("v1", "ConfigMap")),
        ("/api/v1/pods", None),
        ("/api/v1/namespaces/ns/pods", None),
        ("/api/v1/namespaces", None),
        ("/apis/example.com/v1/secrets", None),
        ("/api/v2/secrets", None),
        ("/api/v1/nodes/secrets", None),
    ],
)
def test_only_core_secrets_and_configmaps_are_metadata_only(
    path: str, expected: tuple[str, str] | None
) -> None:
    assert kubeapi.metadata_only(path) == expected


async def test_a_secret_list_asks_for_metadata_and_gets_its_kind_back() -> None:
    body = {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": "7", "continue": ""},
        "items": [_partial("a"), _partial("b")],
    }
    fake = FakeClient(FakeResponse(orjson.dumps(body)))
    page = await _api(fake).list_page("/api/v1/secrets", limit=10, continue_token="")
    assert fake.accepts == [kubeapi.PARTIAL_LIST]
    assert kubeapi.PARTIAL_LIST == (
        "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
    )
    assert page["metadata"]["resourceVersion"] == "7"
    assert [(i["apiVersion"], i["kind"]) for i in page["items"]] == [("v1", "Secret")] * 2
    assert page["items"][0]["metadata"]["name"] == "a"


@pytest.mark.parametrize("items", [None, "absent"])
async def test_an_empty_metadata_list_without_items_is_an_empty_page(items: object) -> None:
    """A cluster with no Secret answers "items": null; that is no protocol error."""
    body: dict[str, object] = {
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadataList",
        "metadata": {"resourceVersion": "9"},
    }
    if items != "absent":
        body["items"] = items
    fake = FakeClient(FakeResponse(orjson.dumps(body)))
    page = await _api(fake).list_page("/api/v1/secrets", limit=10, continue_token="")
    assert page["items"] == []
    assert page["metadata"]["resourceVersion"] == "9"


async def test_a_body_that_is_no_list_is_a_protocol_error() -> None:
    fake = FakeClient(FakeResponse(orjson.dumps({"kind": "Status", "items": None})))
    with pytest.raises(kubeapi.ProtocolError, match="has no items"):
        await _api(fake).list_page("/api/v1/secrets", limit=10, continue_token="")


async def test_other_lists_ask_for_full_json_and_are_left_alone() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": []}}
    body = {"kind": "PodList", "metadata": {"resourceVersion": "3"}, "items": [pod]}
    fake = FakeClient(FakeResponse(orjson.dumps(body)))
    page = await _api(fake).list_page("/api/v1/pods", limit=10, continue_token="")
    assert fake.accepts == ["application/json"]
    assert page["items"] == [pod]


async def test_a_configmap_watch_asks_for_metadata_and_restores_each_object() -> None:
    lines = [
        orjson.dumps({"type": "ADDED", "object": _partial("a")}) + b"\n",
        b"\n",
        orjson.dumps({"type": "DELETED", "object": _partial("b")}) + b"\n",
    ]
    fake = FakeClient(FakeResponse(b"", lines))
    async with _api(fake).watch("/api/v1/configmaps", resource_version="5", timeout_s=10) as stream:
        events = [event async for event in stream]
    assert fake.accepts == [kubeapi.PARTIAL_WATCH]
    assert kubeapi.PARTIAL_WATCH == "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
    assert [(e["type"], e["object"]["kind"], e["object"]["apiVersion"]) for e in events] == [
        ("ADDED", "ConfigMap", "v1"),
        ("DELETED", "ConfigMap", "v1"),
    ]


async def test_a_metadata_only_watch_still_raises_its_error_events() -> None:
    status = {"kind": "Status", "apiVersion": "v1", "code": 410, "message": "too old"}
    fake = FakeClient(FakeResponse(b"", [orjson.dumps({"type": "ERROR", "object": status})]))
    with pytest.raises(kubeapi.GoneError):
        async with _api(fake).watch("/api/v1/secrets", resource_version="1", timeout_s=10) as s:
            await anext(s)


async def test_other_watches_ask_for_full_json() -> None:
    pod = {"metadata": {"name": "p"}}
    fake = FakeClient(FakeResponse(b"", [orjson.dumps({"type": "ADDED", "object": pod})]))
    async with _api(fake).watch("/api/v1/pods", resource_version="1", timeout_s=10) as stream:
        events = [event async for event in stream]
    assert fake.accepts == ["application/json"]
    assert events[0]["object"] == pod
