"""The normaliser: no Secret value survives, env values are redacted, noise keeps the digest."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import orjson
import pytest

from kposture.ingest import normalising

CANARY = "canary-3f9c2e"


def _dump(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _pod_spec() -> dict[str, Any]:
    return {
        "containers": [
            {
                "name": "app",
                "image": "nginx",
                "env": [
                    {"name": "PASSWORD", "value": CANARY},
                    {"name": "EMPTY", "value": ""},
                    {"name": "FROM", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ],
            }
        ],
        "initContainers": [{"name": "init", "env": [{"name": "T", "value": CANARY}]}],
        "ephemeralContainers": [{"name": "debug", "env": [{"name": "T", "value": CANARY}]}],
    }


def test_secret_keeps_metadata_only() -> None:
    """A Secret loses data, stringData, managedFields and the last-applied annotation."""
    secret = {
        "metadata": {
            "name": "s",
            "uid": "u1",
            "labels": {"app": "x"},
            "annotations": {normalising.LAST_APPLIED: f'{{"data":"{CANARY}"}}', "team": "a"},
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:data": {CANARY: {}}}}],
        },
        "data": {"password": CANARY},
        "stringData": {"token": CANARY},
        "type": "Opaque",
    }
    out = normalising.normalise(secret, api_version="v1", kind="Secret")
    assert CANARY not in _dump(out)
    assert out["kind"] == "Secret"
    assert out["type"] == "Opaque"
    assert out["metadata"]["labels"] == {"app": "x"}
    assert out["metadata"]["annotations"] == {"team": "a"}
    assert set(out) == {"apiVersion", "kind", "metadata", "type"}


def test_configmap_keeps_metadata_only() -> None:
    """A ConfigMap loses its data, binaryData and last-applied annotation."""
    cm = {
        "metadata": {"name": "c", "uid": "u", "annotations": {normalising.LAST_APPLIED: CANARY}},
        "data": {"k": CANARY},
        "binaryData": {"b": "AAAA"},
    }
    out = normalising.normalise(cm, api_version="v1", kind="ConfigMap")
    assert CANARY not in _dump(out)
    assert set(out) == {"apiVersion", "kind", "metadata"}


def test_node_keeps_labels_and_spec_only() -> None:
    """A Node keeps name, uid, labels and spec; status and annotations go."""
    node = {
        "metadata": {"name": "n", "uid": "u", "labels": {"zone": "a"}, "annotations": {"x": "y"}},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {"conditions": []},
    }
    out = normalising.normalise(node, api_version="v1", kind="Node")
    assert out["metadata"] == {"name": "n", "uid": "u", "labels": {"zone": "a"}}
    assert out["spec"] == {"podCIDR": "10.0.0.0/24"}
    assert "status" not in out


@pytest.mark.parametrize(
    ("api_version", "kind", "wrap"),
    [
        ("v1", "Pod", lambda spec: {"spec": spec}),
        ("apps/v1", "Deployment", lambda spec: {"spec": {"template": {"spec": spec}}}),
        ("apps/v1", "StatefulSet", lambda spec: {"spec": {"template": {"spec": spec}}}),
        ("batch/v1", "Job", lambda spec: {"spec": {"template": {"spec": spec}}}),
        (
            "batch/v1",
            "CronJob",
            lambda spec: {"spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}},
        ),
        ("v1", "PodTemplate", lambda spec: {"template": {"spec": spec}}),
    ],
)
def test_env_values_are_redacted_in_every_pod_spec(api_version: str, kind: str, wrap: Any) -> None:
    """Literal env values of all container lists become the marker; valueFrom stays."""
    obj = {"metadata": {"name": "w", "uid": "u"}, **wrap(_pod_spec())}
    before = copy.deepcopy(obj)
    out = normalising.normalise(obj, api_version=api_version, kind=kind)
    text = _dump(out)
    assert CANARY not in text
    assert text.count(normalising.REDACTED) == 4  # the empty value is marked too
    assert '"valueFrom":{"secretKeyRef"' in text
    assert obj == before  # the input is not modified


def test_last_applied_annotation_of_a_workload_is_normalised() -> None:
    """The last-applied copy of a Deployment carries no env value either."""
    applied = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"template": {"spec": _pod_spec()}},
    }
    obj = {
        "metadata": {
            "name": "d",
            "uid": "u",
            "annotations": {normalising.LAST_APPLIED: json.dumps(applied)},
        },
        "spec": {"template": {"spec": _pod_spec()}},
    }
    out = normalising.normalise(obj, api_version="apps/v1", kind="Deployment")
    assert CANARY not in _dump(out)
    kept = json.loads(out["metadata"]["annotations"][normalising.LAST_APPLIED])
    assert kept["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"


def test_unreadable_last_applied_annotation_is_hidden() -> None:
    """An annotation that is not a JSON object is replaced by the marker."""
    obj = {"metadata": {"name": "d", "uid": "u", "annotations": {normalising.LAST_APPLIED: CANARY}}}
    out = normalising.normalise(obj, api_version="v1", kind="Service")
    assert out["metadata"]["annotations"][normalising.LAST_APPLIED] == normalising.REDACTED


def test_status_and_version_noise_keep_the_digest() -> None:
    """Changing only status, resourceVersion, managedFields or generation keeps the digest."""
    base = {
        "metadata": {"name": "p", "uid": "u", "resourceVersion": "1", "generation": 1},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Pending"},
    }
    noisy = copy.deepcopy(base)
    noisy["metadata"].update(resourceVersion="9", generation=2, managedFields=[{"m": 1}])
    noisy["status"] = {"phase": "Running", "podIP": "10.0.0.1"}
    a = normalising.normalise(base, api_version="v1", kind="Pod")
    b = normalising.normalise(noisy, api_version="v1", kind="Pod")
    assert normalising.digest(a) == normalising.digest(b)


@pytest.mark.parametrize(
    "change",
    [
        lambda o: o["spec"]["containers"][0].update(image="evil"),
        lambda o: o["metadata"].update(labels={"a": "b"}),
        lambda o: o["metadata"].update(annotations={"a": "b"}),
    ],
)
def test_spec_and_metadata_changes_change_the_digest(change: Any) -> None:
    """Anything a check may read changes the digest."""
    base = {"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": [{"image": "nginx"}]}}
    changed = copy.deepcopy(base)
    change(changed)
    a = normalising.normalise(base, api_version="v1", kind="Pod")
    b = normalising.normalise(changed, api_version="v1", kind="Pod")
    assert normalising.digest(a) != normalising.digest(b)


def test_ref_names_the_object() -> None:
    """The reference carries apiVersion, kind, namespace, name, uid and resourceVersion."""
    obj = normalising.normalise(
        {"metadata": {"name": "d", "namespace": "ns", "uid": "u", "resourceVersion": "7"}},
        api_version="apps/v1",
        kind="Deployment",
    )
    ref = normalising.ref(obj)
    assert (ref.api_version, ref.kind, ref.namespace, ref.name, ref.uid, ref.resource_version) == (
        "apps/v1",
        "Deployment",
        "ns",
        "d",
        "u",
        "7",
    )
    assert ref.subject == "ns/Deployment/d"


def test_normaliser_imports_no_io_library() -> None:
    """The pure core loads without asyncio, aiokafka or kubernetes_asyncio."""
    code = (
        "import sys, kposture.ingest.normalising\n"
        "io = ('asyncio', 'aiokafka', 'kubernetes_asyncio', 'aiohttp')\n"
        "bad = [m for m in io if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and a constant program
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
