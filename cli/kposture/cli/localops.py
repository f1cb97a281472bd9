"""Local plumbing shared by ``kposture demo`` and ``kposture bench``.

Both run the product's services as child processes, write to the dev clusters' apiservers the
way ``kubectl`` does, and read the run's topics back from their beginning. What they do with
it differs; how they do it is here:

* :class:`ChildProcess` -- ``kposture <command> --config FILE`` in its own process group,
  logging to a file, stopped with SIGTERM (a clean shutdown) and SIGKILL only if that takes
  too long;
* :class:`ApiServer` and :func:`path_of` -- one cluster's apiserver through the
  kubernetes_asyncio client, with fixed REST paths (no discovery round trip);
* :class:`TopicReader` -- a consumer without a group over fixed partitions from their first
  record, an admin client for group offsets, and the task that reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self, TypedDict, Unpack

import aiokafka
from aiokafka.admin import AIOKafkaAdminClient
from kubernetes_asyncio import client

from kposture.runtime import kafka, kube
from kposture.runtime import settings as settings_mod

_ENTRY = "from kposture.cli.main import main; main()"


class ProcessError(RuntimeError):
    """A child process could not start or died; the message carries its last log lines."""

    retriable = False


class ChildProcess:
    """``kposture <command> --config FILE`` as a child process, logging to a file.

    ``label`` names the process in error messages; ``error`` is the exception it raises.
    """

    error: ClassVar[type[ProcessError]] = ProcessError
    stop_timeout_s: ClassVar[float] = 20.0

    def __init__(self, command: str, *, label: str, config_path: Path, log_path: Path) -> None:
        self.command = command
        self.label = label
        self.config_path = config_path
        self.log_path = log_path
        self.started_at: float | None = None  # time.time() when the process was started
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process with its config file."""
        # The config file is the whole truth of a run: setting overrides from the environment
        # (KPOSTURE_<SECTION>__<FIELD>) would silently change what is shown or measured.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(settings_mod.ENV_PREFIX) or k == "KPOSTURE_HOME"
        }
        self.started_at = time.time()
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ENTRY,
                self.command,
                "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # Its own process group: a Ctrl-C in the terminal reaches the parent, which
                # then stops its children in order instead of all of them dying at once.
                start_new_session=True,
            )

    def check(self) -> None:
        """Raise :attr:`error` if the process has exited."""
        process = self._process
        if process is not None and process.returncode is not None:
            raise self.error(
                f"{self.label} exited with {process.returncode}; last log lines:\n{self.tail()}"
            )

    async def stop(self, *, timeout_s: float | None = None) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``); its exit code."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.stop_timeout_s if timeout_s is None else timeout_s):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode

    def tail(self, lines: int = 15) -> str:
        """The last lines of the process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


_PATHS: Mapping[str, tuple[str, str, bool]] = {
    # kind -> (API prefix, resource, namespaced)
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Service": ("/api/v1", "services", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
}
"""Every kind the demo and the bench write (fixed, so no discovery round trip)."""


def path_of(kind: str, *, namespace: str = "", name: str = "") -> str:
    """The REST path of an object, or of its collection when ``name`` is empty.

    A namespaced kind without ``namespace`` gives the collection across all namespaces.
    """
    prefix, resource, namespaced = _PATHS[kind]
    base = f"{prefix}/namespaces/{namespace}" if namespaced and namespace else prefix
    return f"{base}/{resource}/{name}" if name else f"{base}/{resource}"


class Request(TypedDict, total=False):
    """What a call to the apiserver may carry besides its method and path."""

    body: Any  # JSON-encoded by the client; None sends no body
    query: Sequence[tuple[str, str]]
    content_type: str  # "application/json" unless said


class ApiServer:
    """One cluster's apiserver through a kubernetes_asyncio client it owns."""

    def __init__(self, name: str, api: client.ApiClient) -> None:
        self.name = name
        self._api = api

    @classmethod
    async def connect(cls, settings: settings_mod.ClusterSettings) -> Self:
        """A client for the kubeconfig context of ``settings``."""
        return cls(settings.name, await kube.api_client(settings))

    async def close(self) -> None:
        """Close the connection pool."""
        await self._api.close()

    async def _call_api(
        self, method: str, path: str, options: Mapping[str, Any], **request: Unpack[Request]
    ) -> Any:
        """One request with JSON in and out; ``options`` go to ``call_api`` as they are."""
        content_type = request.get("content_type", "application/json")
        return await self._api.call_api(
            path,
            method,
            query_params=list(request.get("query", ())),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=request.get("body"),
            auth_settings=["BearerToken"],
            **options,
        )


class TopicReader:
    """A consumer without a group over fixed partitions, an admin client, and a reading task."""

    def __init__(self, kafka_settings: settings_mod.KafkaSettings) -> None:
        self._kafka = kafka_settings
        self._consumer: aiokafka.AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._task: asyncio.Task[None] | None = None

    async def _open(
        self,
        partitions: Sequence[aiokafka.TopicPartition],
        read: Callable[[aiokafka.AIOKafkaConsumer], Coroutine[Any, Any, None]],
        *,
        client_id: str,
        task_name: str,
    ) -> None:
        """Assign ``partitions`` from their first record and start ``read`` on the consumer."""
        consumer = kafka.consumer(self._kafka, group_id=None, client_id=client_id)
        await consumer.start()
        self._consumer = consumer
        consumer.assign(list(partitions))
        await consumer.seek_to_beginning(*partitions)
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._kafka.bootstrap_servers,
            client_id=f"{client_id}-admin",
            security_protocol=self._kafka.security_protocol,
        )
        await admin.start()
        self._admin = admin
        self._task = asyncio.create_task(read(consumer), name=task_name)

    async def stop(self) -> None:
        """Stop reading and close the clients."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    def check(self) -> None:
        """Re-raise the reader's failure, if it failed."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()
