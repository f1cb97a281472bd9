"""Cross-object checks on the real broker: NetworkPolicy changes re-evaluate their Namespace."""

from __future__ import annotations

from typing import Any

import pytest
from evaluate_harness import Bus, running

from kposture.schemas import findings, resources, topics

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
