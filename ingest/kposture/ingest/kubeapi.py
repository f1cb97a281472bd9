"""The Kubernetes adapter of ingest: discovery, paginated lists and watch streams over REST.

It speaks plain JSON to ``/api`` and ``/apis`` paths through a ``kubernetes_asyncio`` API client
(which brings the kubeconfig, TLS and token refresh), so one code path serves every kind. No
object is deserialised into a model: the normaliser wants the raw mapping, and this is faster.

Secrets and ConfigMaps, which are published metadata-only, are listed and watched as
``PartialObjectMetadata`` (see :func:`metadata_only`): their values never leave the apiserver.
Each item gets its real ``apiVersion`` and ``kind`` back, so nothing downstream can tell.

Errors, all :class:`KubeApiError` with a ``reason`` (a metrics label) and a ``retriable`` flag::

    KubeApiError
    ├── UnreachableError   connection refused, reset, TLS or timeout  (retriable)
    ├── GoneError          410: our resourceVersion was compacted     (retriable: relist)
    ├── ServerError        429 and 5xx                                 (retriable)
    ├── ProtocolError      a response that is not the JSON we expect  (retriable)
    ├── UnauthorizedError  401                                         (not retriable)
    ├── ForbiddenError     403                                         (not retriable)
    └── NotFoundError      404 and other 4xx                           (not retriable)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

from kposture.runtime import kube
from kposture.runtime import settings as settings_mod

_LIST_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=10)
_AUTH = ["BearerToken"]

JSON = "application/json"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
"""The Accept of a metadata-only list: the items carry metadata and nothing else."""
PARTIAL_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
"""The Accept of a metadata-only watch: every event's object is a PartialObjectMetadata."""

_METADATA_ONLY: dict[str, tuple[str, str]] = {
    # core-group plural -> (apiVersion, kind). Only kinds the normaliser publishes as metadata
    # only belong here: anything else would lose the fields checks read.
    "secrets": ("v1", "Secret"),
    "configmaps": ("v1", "ConfigMap"),
}
_PARTIAL_KINDS = frozenset({"PartialObjectMetadata", "PartialObjectMetadataList"})


class KubeApiError(Exception):
    """A request to one cluster failed; ``reason`` is a short label safe for metrics and logs."""

    reason = "error"
    retriable = True

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class UnreachableError(KubeApiError):
    """The apiserver could not be reached or the connection broke."""

    reason = "unreachable"


class GoneError(KubeApiError):
    """410 Gone: the resourceVersion is too old. Routine: the watcher relists."""

    reason = "gone"


class ServerError(KubeApiError):
    """The apiserver is overloaded (429) or failing (5xx)."""

    reason = "server_error"


class ProtocolError(KubeApiError):
    """The response was not the JSON a list, a watch or discovery returns."""

    reason = "protocol"


class UnauthorizedError(KubeApiError):
    """401: the credentials were refused."""

    reason = "unauthorized"
    retriable = False


class ForbiddenError(KubeApiError):
    """403: RBAC does not allow this request."""

    reason = "forbidden"
    retriable = False


class NotFoundError(KubeApiError):
    """404 or another client error."""

    reason = "not_found"
    retriable = False


def _error_for(status: int, message: str) -> KubeApiError:
    if status == 410:
        return GoneError(message, status=status)
    if status == 401:
        return UnauthorizedError(message, status=status)
    if status == 403:
        return ForbiddenError(message, status=status)
    if status == 429 or status >= 500:
        return ServerError(message, status=status)
    return NotFoundError(message, status=status)


def resource_path(group: str, version: str, plural: str) -> str:
    """The cluster-wide collection path of a resource (all namespaces)."""
    if not group:
        return f"/api/{version}/{plural}"
    return f"/apis/{group}/{version}/{plural}"


def metadata_only(path: str) -> tuple[str, str] | None:
    """The real ``(apiVersion, kind)`` if ``path`` is a collection requested metadata-only.

    Matches the core-group collection, cluster-wide or in one namespace (``/api/v1/secrets``,
    ``/api/v1/namespaces/<ns>/configmaps``); None for everything else.
    """
    parts = path.strip("/").split("/")
    if len(parts) not in (3, 5) or parts[0] != "api" or parts[1] != "v1":
        return None
    if len(parts) == 5 and parts[2] != "namespaces":
        return None
    return _METADATA_ONLY.get(parts[-1])


def restore_kind(obj: dict[str, Any], real: tuple[str, str]) -> None:
    """Stamp the real ``apiVersion``/``kind`` on a PartialObjectMetadata item, in place."""
    if obj.get("kind") in _PARTIAL_KINDS or "kind" not in obj:
        obj["apiVersion"], obj["kind"] = real


def _status_message(body: bytes) -> str:
    # A Status object's message names the request, never object content; other bodies are
    # not echoed, since an error page could quote anything.
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "non-JSON error body"
    if isinstance(status, dict):
        return str(status.get("message", ""))[:300]
    return "unexpected error body"


class RestApi:
    """One cluster's API, over an open ``kubernetes_asyncio`` client."""

    def __init__(self, api_client: client.ApiClient, *, name: str) -> None:
        self._client = api_client
        self._name = name

    async def close(self) -> None:
        """Close the client's connection pool."""
        await self._client.close()

    async def discover(self, group_version: str) -> list[dict[str, Any]] | None:
        """The resources a group/version serves, or None if the cluster does not serve it."""
        path = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
        try:
            body = await self._get_json(path, [])
        except NotFoundError:
            return None
        resources = body.get("resources")
        if not isinstance(resources, list):
            raise ProtocolError(f"{self._name}: discovery of {group_version} has no resources")
        return resources

    async def list_page(self, path: str, *, limit: int, continue_token: str) -> dict[str, Any]:
        """One page of a list (``items``, ``metadata.resourceVersion``, ``metadata.continue``)."""
        query: list[tuple[str, str]] = [("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        real = metadata_only(path)
        body = await self._get_json(path, query, accept=PARTIAL_LIST if real else JSON)
        items = body.get("items")
        if items is None and _is_list(body):
            # An empty list may come without items: the apiserver encodes an empty
            # PartialObjectMetadataList as "items": null (a cluster with no Secret at all).
            items = body["items"] = []
        if not isinstance(items, list):
            raise ProtocolError(f"{self._name}: list of {path} has no items")
        if real:
            for item in items:
                if isinstance(item, dict):
                    restore_kind(item, real)
        return body

    @contextlib.asynccontextmanager
    async def watch(
        self, path: str, *, resource_version: str, timeout_s: int
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Open a watch with bookmarks from ``resource_version``; yield its event stream.

        An ``ERROR`` event is raised as the matching :class:`KubeApiError` (410 becomes
        :class:`GoneError`). The stream simply ends when the server closes it.
        """
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_s)),
        ]
        # No read timeout here: the watcher's watchdog decides how long silence may last.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        real = metadata_only(path)
        response = await self._request(path, query, timeout, accept=PARTIAL_WATCH if real else JSON)
        events = self._events(response, path, real)
        try:
            if response.status != 200:
                raise _error_for(response.status, await self._error_message(response, path))
            yield events
        finally:
            await events.aclose()
            # close(), not release(): a half-read stream must not go back to the pool.
            response.close()

    async def _events(
        self, response: aiohttp.ClientResponse, path: str, real: tuple[str, str] | None
    ) -> AsyncGenerator[dict[str, Any], None]:
        while True:
            try:
                line = await response.content.readline()
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise UnreachableError(
                    f"{self._name}: watch of {path} broke: {type(exc).__name__}"
                ) from exc
            if not line:
                return
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"{self._name}: watch of {path} sent non-JSON") from exc
            if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                raise ProtocolError(f"{self._name}: watch of {path} sent a malformed event")
            if event.get("type") == "ERROR":
                status = event["object"]
                code = status.get("code")
                raise _error_for(
                    code if isinstance(code, int) else 500,
                    f"{self._name}: watch of {path}: {str(status.get('message', ''))[:300]}",
                )
            if real:
                restore_kind(event["object"], real)
            yield event

    async def _get_json(
        self, path: str, query: list[tuple[str, str]], *, accept: str = JSON
    ) -> dict[str, Any]:
        response = await self._request(path, query, _LIST_TIMEOUT, accept=accept)
        try:
            if response.status != 200:
                raise _error_for(response.status, await self._error_message(response, path))
            try:
                body = orjson.loads(await response.read())
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise UnreachableError(
                    f"{self._name}: reading {path} failed: {type(exc).__name__}"
                ) from exc
            except orjson.JSONDecodeError as exc:
                raise ProtocolError(f"{self._name}: {path} returned non-JSON") from exc
        finally:
            response.release()
        if not isinstance(body, dict):
            raise ProtocolError(f"{self._name}: {path} returned {type(body).__name__}")
        return body

    async def _request(
        self,
        path: str,
        query: list[tuple[str, str]],
        limits: aiohttp.ClientTimeout,
        *,
        accept: str = JSON,
    ) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self._client.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": accept},
                auth_settings=_AUTH,
                _preload_content=False,
                _request_timeout=limits,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            # The exception text may carry the URL (never object content); the type is enough.
            raise UnreachableError(
                f"{self._name}: cannot reach the apiserver: {type(exc).__name__}: {exc}"
            ) from exc
        return response

    async def _error_message(self, response: aiohttp.ClientResponse, path: str) -> str:
        try:
            body = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            body = b""
        return f"{self._name}: GET {path}: {response.status} {_status_message(body)}"


async def connect(cluster: settings_mod.ClusterSettings) -> RestApi:
    """Open the API of one configured cluster (:class:`kube.ClusterConfigError` if it cannot)."""
    return RestApi(await kube.api_client(cluster), name=cluster.name)


def _is_list(body: dict[str, Any]) -> bool:
    """Whether ``body`` is a list object (``kind`` ``...List`` with list metadata)."""
    kind = body.get("kind")
    return (
        isinstance(kind, str) and kind.endswith("List") and isinstance(body.get("metadata"), dict)
    )
