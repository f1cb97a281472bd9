"""Cross-object checks on the real broker: a change re-evaluates the objects it concerns."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from evaluate_harness import CLUSTER, Bus, running
from test_evaluate_app import baseline as privileged_baseline

from kposture.evaluate.policy import loading
from kposture.evaluate.stream import inventory, publishing
from kposture.schemas import common, findings, resources, topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

BASELINE = """\
apiVersion: kposture.io/v1
kind: Baseline
name: itest
version: v1.0
checks:
  - id: namespaceNetworkPolicy
    title: Every namespace has a NetworkPolicy
    severity: medium
    controls: ["itest:network-policy"]
    match: {apiGroups: [""], kinds: [Namespace]}
    needs: [networkPolicies]
    message: no NetworkPolicy selects pods in this namespace
    validation: >-
      inventory.networkPolicies.exists(p, p.metadata.namespace == object.metadata.name)
"""

NAMESPACE = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "shop", "uid": "ns-shop"},
}


def network_policy(name: str) -> dict[str, Any]:
    """A default-deny NetworkPolicy in namespace ``shop``."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def transitions(records: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """(object uid, transition) of every finding record, in arrival order."""
    return [(f.ref.uid, str(f.state)) for _, f in records if isinstance(f, findings.Finding)]


def count(expected: tuple[str, str], times: int) -> Any:
    """A predicate: ``expected`` arrived at least ``times`` times."""
    return lambda records: transitions(records).count(expected) >= times


async def test_network_policy_changes_open_and_resolve_the_namespace_finding(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """No policy: opened; one created: resolved; a second and then both deleted: opened once."""
    await bus.baseline(BASELINE, name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    async with running(settings):
        await bus.resource(resources.Change.ADDED, "shop", NAMESPACE, uid="ns-shop")
        await out.until(count(("ns-shop", "opened"), 1))
        await bus.resource(resources.Change.ADDED, "deny", network_policy("deny"))
        await out.until(count(("ns-shop", "resolved"), 1))
        # A second policy, a resync of the namespace and of a policy: nothing to say.
        await bus.resource(resources.Change.ADDED, "web", network_policy("web"))
        await bus.resource(resources.Change.SYNCED, "shop", NAMESPACE, uid="ns-shop")
        await bus.resource(resources.Change.SYNCED, "deny", network_policy("deny"))
        await bus.resource(resources.Change.DELETED, "deny", network_policy("deny"))
        await bus.resource(resources.Change.DELETED, "web", network_policy("web"))
        await out.until(count(("ns-shop", "opened"), 2))
        records = await out.settle()
    assert transitions(records) == [
        ("ns-shop", "opened"),
        ("ns-shop", "resolved"),
        ("ns-shop", "opened"),
    ]
    assert {f.check for _, f in records} == {"namespaceNetworkPolicy"}


async def test_another_workers_inventory_change_re_evaluates_this_workers_objects(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """A NetworkPolicy that another worker handled reaches this one only through the changelog.

    Written there (as that worker writes it) and later deleted, it resolves and reopens the
    finding of the namespace this worker owns: the worker re-evaluates its own objects that a
    change in its copy concerns, whoever made the change. A record it cannot apply is skipped.
    """
    await bus.baseline(BASELINE, name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    async with running(settings) as worker:
        await bus.resource(resources.Change.ADDED, "shop", NAMESPACE, uid="ns-shop")
        await out.until(count(("ns-shop", "opened"), 1))
        policy_event = resources.ResourceEvent(
            cluster=CLUSTER,
            change=resources.Change.ADDED,
            ref=common.ObjectRef(
                api_version="networking.k8s.io/v1",
                kind="NetworkPolicy",
                name="deny",
                uid="uid-deny",
                namespace="shop",
            ),
            object=network_policy("deny"),
            digest="d1",
            observed_at=common.utcnow(),
        )
        update = inventory.update_of(policy_event, table=inventory.Indexed())
        assert update is not None
        changelog = worker._inventory_table.changelog
        # A record no worker writes (its key is not an entry's) is skipped, and the ones
        # after it still apply.
        await bus.producer.send_and_wait(changelog, key=b"\xff\xfe", value=b"junk")
        await bus.producer.send_and_wait(changelog, key=update.key, value=update.value)
        await out.until(count(("ns-shop", "resolved"), 1))
        await bus.producer.send_and_wait(changelog, key=update.key, value=None)
        await out.until(count(("ns-shop", "opened"), 2))
        records = await out.settle()
    assert transitions(records) == [
        ("ns-shop", "opened"),
        ("ns-shop", "resolved"),
        ("ns-shop", "opened"),
    ]


def secret_readers_baseline() -> str:
    """A baseline holding exactly the built-in ``secretReadersInUse`` check, as shipped."""
    shipped = yaml.safe_load(loading.builtin_path("cis-1.12").read_text())
    (check,) = [c for c in shipped["checks"] if c["id"] == "secretReadersInUse"]
    return yaml.safe_dump(
        {
            "apiVersion": "kposture.io/v1",
            "kind": "Baseline",
            "name": "itest-rbac",
            "version": "v1.0",
            "checks": [check],
        }
    )


def shop(kind: str, name: str, api_version: str = "v1", **fields: Any) -> dict[str, Any]:
    """An object in namespace ``shop``."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop"},
        **fields,
    }


RBAC = "rbac.authorization.k8s.io/v1"
ACCOUNT = shop("ServiceAccount", "app")
ROLE = shop(
    "Role",
    "secret-reader",
    RBAC,
    rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
)
BINDING = shop(
    "RoleBinding",
    "app-secrets",
    RBAC,
    subjects=[{"kind": "ServiceAccount", "name": "app"}],
    roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
)


def pod_as(name: str, account: str) -> dict[str, Any]:
    """A Pod in ``shop`` running as ``account``."""
    return shop(
        "Pod",
        name,
        spec={"serviceAccountName": account, "containers": [{"name": "c", "image": "i"}]},
    )


async def test_pods_and_rbac_changes_open_and_resolve_the_service_account_finding(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """CIS 5.1.2 in the stream: the account's finding follows its pods and its bindings."""
    await bus.baseline(secret_readers_baseline(), name="itest-rbac", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    sa = ("uid-app", "opened")
    async with running(settings):
        # Bound to a secret reader, but no pod runs as it: nothing to say.
        await bus.resource(resources.Change.ADDED, "app", ACCOUNT)
        await bus.resource(resources.Change.ADDED, "secret-reader", ROLE)
        await bus.resource(resources.Change.ADDED, "app-secrets", BINDING)
        await bus.resource(resources.Change.ADDED, "other", pod_as("other", "default"))
        # The first pod that runs as it opens the finding; a second one changes nothing.
        await bus.resource(resources.Change.ADDED, "web-1", pod_as("web-1", "app"))
        await out.until(count(sa, 1))
        await bus.resource(resources.Change.ADDED, "web-2", pod_as("web-2", "app"))
        await bus.resource(resources.Change.DELETED, "web-1", pod_as("web-1", "app"))
        await bus.resource(resources.Change.DELETED, "web-2", pod_as("web-2", "app"))
        await out.until(count(("uid-app", "resolved"), 1))
        # Pods again, then the binding goes: resolved by the RBAC change.
        await bus.resource(resources.Change.ADDED, "web-3", pod_as("web-3", "app"))
        await out.until(count(sa, 2))
        await bus.resource(resources.Change.DELETED, "app-secrets", BINDING)
        await out.until(count(("uid-app", "resolved"), 2))
        records = await out.settle()
    assert transitions(records) == [
        ("uid-app", "opened"),
        ("uid-app", "resolved"),
        ("uid-app", "opened"),
        ("uid-app", "resolved"),
    ]
    assert {f.check for _, f in records} == {"secretReadersInUse"}


async def test_a_policy_that_needs_new_views_fills_them_from_the_stored_objects(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """Objects seen under a policy that kept no RBAC view are judged once one needs it."""
    await bus.baseline(BASELINE, name="itest", version="v1.0")  # keeps networkPolicies only
    out = await reader(topics.Topic.FINDINGS)
    async with running(settings):
        for name, obj in (
            ("app", ACCOUNT),
            ("secret-reader", ROLE),
            ("app-secrets", BINDING),
            ("web-1", pod_as("web-1", "app")),
        ):
            await bus.resource(resources.Change.ADDED, name, obj)
        await bus.resource(resources.Change.ADDED, "shop", NAMESPACE, uid="ns-shop")
        await out.until(count(("ns-shop", "opened"), 1))
        await bus.baseline(secret_readers_baseline(), name="itest-rbac", version="v1.0")
        await out.until(count(("uid-app", "opened"), 1))
        records = await out.settle()
    assert [t for t in transitions(records) if t[0] == "uid-app"] == [("uid-app", "opened")]


def priorities(records: list[tuple[str, Any]], uid: str) -> list[tuple[str, int]]:
    """(transition, priority) of one object's finding records, in arrival order."""
    return [
        (str(f.state), f.priority)
        for _, f in records
        if isinstance(f, findings.Finding) and f.ref.uid == uid
    ]


async def test_a_service_that_exposes_a_pod_and_rbac_that_empowers_it_raise_its_priority(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """A LoadBalancer Service selecting the pod, then a binding that lets its account read
    secrets: each raises the open finding's priority (updated); their removal lowers it."""
    await bus.baseline(privileged_baseline(), name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    web = shop(
        "Pod",
        "web",
        metadata={"name": "web", "namespace": "shop", "labels": {"app": "web"}},
        spec={
            "serviceAccountName": "app",
            "containers": [{"name": "c", "image": "i", "securityContext": {"privileged": True}}],
        },
    )
    balancer = shop("Service", "front", spec={"type": "LoadBalancer", "selector": {"app": "web"}})

    def updates(n: int) -> Any:
        return lambda records: [t for t, _ in priorities(records, "uid-web")].count("updated") >= n

    async with running(settings):
        await bus.resource(resources.Change.ADDED, "web", web)
        await out.until(lambda records: bool(priorities(records, "uid-web")))
        await bus.resource(resources.Change.ADDED, "front", balancer)
        await out.until(updates(1))
        await bus.resource(resources.Change.ADDED, "secret-reader", ROLE)
        await bus.resource(resources.Change.ADDED, "app-secrets", BINDING)
        await out.until(updates(2))
        base = priorities(out.records, "uid-web")[0][1]
        await bus.resource(resources.Change.DELETED, "front", balancer)
        await bus.resource(resources.Change.DELETED, "app-secrets", BINDING)
        # Both removals may reach the pod in one re-evaluation: one update or two.
        await out.until(lambda records: priorities(records, "uid-web")[-1] == ("updated", base))
        records = await out.settle()
    seen = priorities(records, "uid-web")
    assert seen[:3] == [("opened", base), ("updated", base + 10), ("updated", base + 20)]
    assert seen[3:] in ([("updated", base + 10), ("updated", base)], [("updated", base)])


def namespace_named(name: str) -> dict[str, Any]:
    """A Namespace object (cluster-scoped)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": "", "uid": f"ns-{name}"},
    }


def policy_in(namespace: str) -> dict[str, Any]:
    """A default-deny NetworkPolicy in ``namespace``."""
    return {**network_policy("deny"), "metadata": {"name": "deny", "namespace": namespace}}


async def test_two_workers_re_evaluate_namespaces_whoever_handled_the_policy(
    settings: Any, bus: Bus, reader: Any
) -> None:
    """Namespaces and their NetworkPolicies spread over two workers: every finding follows.

    Where a policy's partition and its namespace's belong to different workers, only the
    changelog tells the namespace's owner; the test checks that some pairs are split so.
    """
    names = [f"team{n}" for n in range(8)]
    await bus.baseline(BASELINE, name="itest", version="v1.0")
    out = await reader(topics.Topic.FINDINGS)
    async with running(settings) as first, running(settings) as second:
        await first.wait_assigned()  # the second's joining moved some of its partitions
        owned = [first.owned, second.owned]
        assert all(owned), f"each worker should own partitions: {owned}"
        partitions = settings.kafka.partitions

        def owner(uid: str) -> int:
            # The resources key's partition, as every Kafka client's default partitioner.
            key = f"{CLUSTER}/{uid}".encode()
            partition = (publishing.murmur2(key) & 0x7FFFFFFF) % partitions
            return 0 if partition in owned[0] else 1

        split = [name for name in names if owner(f"ns-{name}") != owner(f"np-{name}")]
        assert split, "no namespace and policy on different workers: the test proves nothing"
        for name in names:
            await bus.resource(
                resources.Change.ADDED, name, namespace_named(name), uid=f"ns-{name}"
            )
        await out.until(lambda rs: len(transitions(rs)) >= len(names))
        for name in names:
            await bus.resource(resources.Change.ADDED, "deny", policy_in(name), uid=f"np-{name}")
        await out.until(lambda rs: len(transitions(rs)) >= 2 * len(names))
        for name in names:
            await bus.resource(resources.Change.DELETED, "deny", policy_in(name), uid=f"np-{name}")
        await out.until(lambda rs: len(transitions(rs)) >= 3 * len(names))
        records = await out.settle()
    for name in names:
        assert [t for uid, t in transitions(records) if uid == f"ns-{name}"] == [
            "opened",
            "resolved",
            "opened",
        ], name
