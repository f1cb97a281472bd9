"""Planning: patches with preconditions, pre-images, owners, bare Pods and exact rollbacks."""

from __future__ import annotations

import copy

import pytest
from remediate_fakes import FakeKube, deployment

from kposture.remediate import applying, errors, fields, fixes, planning
from kposture.schemas import findings


def test_a_privileged_deployment_gets_an_apply_patch_with_preconditions() -> None:
    """The patch names the container by name and carries uid and resourceVersion."""
    obj = FakeKube().put(deployment(security={"privileged": True}))
    plan = planning.plan("privileged", obj, cluster="c1")
    assert plan is not None
    assert plan.patch["metadata"] == {
        "name": "web",
        "namespace": "shop",
        "uid": "uid-web",
        "resourceVersion": obj["metadata"]["resourceVersion"],
    }
    assert plan.patch["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "securityContext": {"privileged": False}}
    ]
    assert plan.risk is findings.Risk.DISRUPTIVE
    assert plan.canary_group == "c1/privileged"


def test_the_pre_image_holds_old_values_and_the_shallowest_missing_field() -> None:
    """A changed value is kept; a field that did not exist is recorded at its missing root."""
    obj = FakeKube().put(deployment(security={"privileged": True}))
    privileged = planning.plan("privileged", obj, cluster="c1")
    escalation = planning.plan("allowPrivilegeEscalation", deployment(), cluster="c1")
    assert privileged is not None
    assert escalation is not None
    assert privileged.pre_image == {
        "present": {"spec.template.spec.containers[name=app].securityContext.privileged": True},
        "absent": [],
    }
    assert escalation.pre_image == {
        "present": {},
        "absent": ["spec.template.spec.containers[name=app].securityContext"],
    }


def test_no_plan_when_the_fix_already_holds() -> None:
    """Planning a fix that holds returns None (the service audits a no-op)."""
    assert (
        planning.plan("privileged", deployment(security={"privileged": False}), cluster="c1")
        is None
    )


async def test_rollback_restores_the_object_exactly() -> None:
    """Apply then roll back from the pre-image: the object's spec is what it was."""
    kube = FakeKube(deployment(security={"privileged": True, "runAsUser": 1000}))
    ref = planning.ref_of(deployment())
    for check in ("privileged", "allowPrivilegeEscalation", "capabilities_restricted"):
        before = await kube.get(ref)
        assert before is not None
        plan = planning.plan(check, before, cluster="c1")
        assert plan is not None
        await kube.apply(plan.patch, dry_run=False)
        await applying.rollback(kube, plan.target, pre_image=plan.pre_image, patch=plan.patch)
        after = await kube.get(ref)
        assert after is not None
        assert after["spec"] == before["spec"], check


async def test_rollback_refuses_when_someone_changed_the_field_since() -> None:
    """The guarded JSON Patch never overwrites a later change by someone else."""
    kube = FakeKube(deployment(security={"privileged": True}))
    obj = await kube.get(planning.ref_of(deployment()))
    assert obj is not None
    plan = planning.plan("privileged", obj, cluster="c1")
    assert plan is not None
    applied = await kube.apply(plan.patch, dry_run=False)
    changed = copy.deepcopy(applied)
    changed["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = True
    kube.put(changed)
    with pytest.raises(errors.RollbackError):
        await applying.rollback(kube, plan.target, pre_image=plan.pre_image, patch=plan.patch)


def test_a_pod_with_a_controller_is_fixed_through_its_owner() -> None:
    """Pod -> ReplicaSet -> Deployment: planning names the owner to read next."""
    fix = fixes.lookup("privileged")
    assert fix is not None
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "web-7d",
                    "uid": "rs",
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": "app", "securityContext": {"privileged": True}}]},
    }
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": "web-7d",
            "namespace": "shop",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": "web",
                    "uid": "d",
                    "controller": True,
                }
            ],
        },
    }
    owner = planning.owner_to_fix(fix, pod)
    assert owner is not None
    assert (owner.kind, owner.name) == ("ReplicaSet", "web-7d")
    owner = planning.owner_to_fix(fix, replica_set)
    assert owner is not None
    assert (owner.kind, owner.name) == ("Deployment", "web")
    assert planning.owner_to_fix(fix, deployment()) is None


def test_a_bare_pod_is_only_deleted_with_approval() -> None:
    """A Pod without a controller cannot change its spec: the plan is an approved deletion."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "debug", "namespace": "shop", "uid": "p1", "resourceVersion": "9"},
        "spec": {"containers": [{"name": "sh", "securityContext": {"privileged": True}}]},
        "status": {"phase": "Running"},
    }
    plan = planning.plan("privileged", pod, cluster="c1")
    assert plan is not None
    assert plan.operation is planning.Operation.DELETE
    assert plan.risk is findings.Risk.NEEDS_APPROVAL
    assert "status" not in plan.pre_image["deleted"]
    assert "uid" not in plan.pre_image["deleted"]["metadata"]


def test_a_namespace_without_network_policy_gets_a_default_deny_needing_approval() -> None:
    """The fix creates a NetworkPolicy selecting every pod, denying ingress and egress."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "uid": "n1"}}
    plan = planning.plan("namespaceNetworkPolicy", ns, cluster="c1")
    assert plan is not None
    assert plan.target.kind == "NetworkPolicy"
    assert plan.target.namespace == "shop"
    assert plan.patch["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    assert plan.risk is findings.Risk.NEEDS_APPROVAL
    assert plan.pre_image == {"created": True}


def test_a_service_account_token_fix_is_safe_but_disruptive_on_a_pod_template() -> None:
    """automountServiceAccountToken: safe on a ServiceAccount, disruptive in a template."""
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "app", "namespace": "shop", "uid": "s"},
    }
    on_account = planning.plan("automountServiceAccountToken", account, cluster="c1")
    on_template = planning.plan("automountServiceAccountToken", deployment(), cluster="c1")
    assert on_account is not None
    assert on_account.risk is findings.Risk.SAFE
    assert on_account.patch["automountServiceAccountToken"] is False
    assert on_template is not None
    assert on_template.risk is findings.Risk.DISRUPTIVE
    assert on_template.patch["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_paths_render_and_parse_back() -> None:
    """Pre-image paths survive the audit event's JSON as strings."""
    path: fields.Path = (
        "metadata",
        "annotations",
        "a.b/c",
        "spec",
        "containers",
        ("name", "x"),
        "y",
    )
    assert fields.parse(fields.render(path)) == path


def test_an_unknown_check_has_no_fix() -> None:
    """Planning a check without a catalogue entry raises NoFixError."""
    with pytest.raises(errors.NoFixError):
        planning.plan("hostPathVolumes", deployment(), cluster="c1")


@pytest.mark.parametrize(
    ("check", "canonical"),
    [
        ("privilegedContainers", "privileged"),
        ("noPrivileged", "privileged"),
        ("capabilitiesDropAll", "capabilities_restricted"),
        ("podServiceAccountToken", "automountServiceAccountToken"),
        ("namespaceNetworkPolicy", "defaultDenyNetworkPolicy"),
        ("clusterAdminBinding", "clusterAdminBinding"),
    ],
)
def test_cis_and_nsa_check_ids_name_the_same_fixes(check: str, canonical: str) -> None:
    """The ids of evaluate's CIS and NSA baselines resolve to the catalogue's fixes."""
    fix = fixes.lookup(check)
    assert fix is not None
    assert fix.check == canonical


def test_a_second_fix_keeps_the_fields_an_earlier_fix_applied() -> None:
    """The new apply carries what kposture applied before, so the apiserver does not drop it."""
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u1",
            "resourceVersion": "7",
            "managedFields": [
                {
                    "manager": "kposture",
                    "operation": "Apply",
                    "fieldsV1": {
                        "f:spec": {
                            "f:template": {
                                "f:spec": {
                                    "f:containers": {
                                        'k:{"name":"app"}': {
                                            ".": {},
                                            "f:name": {},
                                            "f:securityContext": {"f:allowPrivilegeEscalation": {}},
                                        }
                                    }
                                }
                            }
                        }
                    },
                }
            ],
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx",
                            "securityContext": {"allowPrivilegeEscalation": False},
                        }
                    ]
                }
            }
        },
    }
    result = planning.plan("capabilities_restricted", obj, cluster="c1")
    assert result is not None
    container = result.patch["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "app"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "image" not in container  # only fields kposture owns are carried, never others'
    assert all("allowPrivilegeEscalation" not in c for c in result.changed)
