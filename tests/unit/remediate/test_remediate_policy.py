"""Policy: mode resolution, what is never remediated, GitOps escalation, automation accounts."""

from __future__ import annotations

import msgspec
import pytest
from remediate_fakes import deployment, finding_for

from kposture.remediate import planning, policy
from kposture.runtime import settings
from kposture.schemas import common, findings

Mode = findings.RemediationMode


def _settings(**kw: object) -> settings.RemediateSettings:
    return msgspec.convert(kw, settings.RemediateSettings)


@pytest.mark.parametrize(
    ("labels", "modes", "default", "expected"),
    [
        ({}, {}, "observe", Mode.OBSERVE),
        ({}, {}, "dry-run", Mode.DRY_RUN),
        ({}, {"pss-baseline": "enforce"}, "observe", Mode.ENFORCE),
        (
            {},
            {"pss-baseline": "enforce", "pss-baseline/privileged": "dry-run"},
            "observe",
            Mode.DRY_RUN,
        ),
        (
            {"kposture.io/mode": "observe"},
            {"pss-baseline/privileged": "enforce"},
            "enforce",
            Mode.OBSERVE,
        ),
        ({"kposture.io/mode": "enforce"}, {}, "observe", Mode.ENFORCE),
    ],
)
def test_the_most_specific_mode_wins(
    labels: dict[str, str], modes: dict[str, str], default: str, expected: Mode
) -> None:
    """Namespace label beats baseline/check, which beats baseline, which beats the default."""
    mode, _ = policy.resolve_mode(
        finding_for(deployment()),
        namespace_labels=labels,
        settings=_settings(default_mode=default, modes=modes),
    )
    assert mode is expected


def test_an_invalid_mode_label_falls_through_instead_of_enforcing() -> None:
    """A typo in the namespace label is passed over; the next level decides."""
    mode, source = policy.resolve_mode(
        finding_for(deployment()),
        namespace_labels={"kposture.io/mode": "enforced"},
        settings=_settings(modes={"pss-baseline": "dry-run"}),
    )
    assert (mode, source) == (Mode.DRY_RUN, "config baseline")


def test_never_remediates_a_finding_that_could_not_be_evaluated() -> None:
    """A check with result error is skipped, whatever the mode."""
    decision = policy.screen(finding_for(deployment(), result=common.Result.ERROR))
    assert decision is not None
    assert decision.verdict is policy.Verdict.SKIP
    assert "error" in decision.reason


@pytest.mark.parametrize("state", [findings.Transition.RESOLVED, findings.Transition.WAIVED])
def test_resolved_and_waived_findings_are_not_decisions(state: findings.Transition) -> None:
    """Only opened and updated findings reach planning."""
    decision = policy.screen(finding_for(deployment(), state=state))
    assert decision is not None
    assert decision.verdict is policy.Verdict.IGNORE


def test_a_failing_finding_with_a_fix_goes_on_to_planning() -> None:
    """An opened failure whose check is in the catalogue passes the screen."""
    assert policy.screen(finding_for(deployment())) is None


def test_opt_out_label_on_object_or_namespace_leaves_it_alone() -> None:
    """kposture.io/remediation: off on either the object or its namespace opts out."""
    assert policy.opted_out(deployment(labels={"kposture.io/remediation": "off"}), {})
    assert policy.opted_out(deployment(), {"kposture.io/remediation": "off"})
    assert not policy.opted_out(deployment(), {})


def _judge(obj: dict[str, object], **kw: object) -> policy.Decision:
    plan = planning.plan("privileged", obj, cluster="c1")
    assert plan is not None
    return policy.judge(plan, obj=obj, mode=Mode.ENFORCE, settings=_settings(**kw))


@pytest.mark.parametrize(
    ("labels", "annotations"),
    [
        ({"argocd.argoproj.io/instance": "shop"}, {}),
        ({}, {"argocd.argoproj.io/tracking-id": "shop:apps/Deployment:shop/web"}),
        ({"kustomize.toolkit.fluxcd.io/name": "apps"}, {}),
        ({"helm.toolkit.fluxcd.io/name": "web"}, {}),
    ],
)
def test_gitops_labels_and_annotations_escalate_with_the_patch_as_suggestion(
    labels: dict[str, str], annotations: dict[str, str]
) -> None:
    """Argo CD and Flux markers mean the git source must change, not the object."""
    obj = deployment(security={"privileged": True}, labels=labels, annotations=annotations)
    decision = _judge(obj)
    assert decision.verdict is policy.Verdict.ESCALATE
    assert "GitOps" in decision.reason


def test_a_field_owned_by_a_gitops_field_manager_escalates() -> None:
    """A field we would change that kustomize-controller owns is escalated."""
    obj = deployment(security={"privileged": True})
    obj["metadata"]["managedFields"] = [
        {
            "manager": "kustomize-controller",
            "operation": "Apply",
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"app"}': {"f:securityContext": {"f:privileged": {}}}
                            }
                        }
                    }
                }
            },
        }
    ]
    decision = _judge(obj)
    assert decision.verdict is policy.Verdict.ESCALATE
    assert "kustomize-controller (Apply)" in decision.reason


def test_automation_accounts_never_lose_permissions_without_approval() -> None:
    """Removing an automation service account from cluster-admin needs an approval."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "ci-admin", "uid": "u1", "resourceVersion": "5"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}],
    }
    plan = planning.plan("clusterAdminBinding", binding, cluster="c1")
    assert plan is not None
    decision = policy.judge(
        plan,
        obj=binding,
        mode=Mode.ENFORCE,
        settings=_settings(automation_service_accounts=["system:serviceaccount:ci:deployer"]),
    )
    assert decision.risk is findings.Risk.NEEDS_APPROVAL
    assert "ci/deployer" in decision.reason


def test_a_deployment_owned_by_an_operator_is_escalated() -> None:
    """A controller owns the Deployment: it would revert the fix, so it is escalated."""
    obj = deployment(security={"privileged": True})
    obj["metadata"]["ownerReferences"] = [
        {"apiVersion": "x.io/v1", "kind": "WebApp", "name": "web", "uid": "w", "controller": True}
    ]
    decision = _judge(obj)
    assert decision.verdict is policy.Verdict.ESCALATE
    assert "WebApp web" in decision.reason


@pytest.mark.parametrize(
    ("manager", "operation", "refused"),
    [
        ("kubectl-create", "Update", False),
        ("before-first-apply", "Update", False),
        ("kubectl-client-side-apply", "Update", True),
        ("helm", "Update", True),
        ("app-team", "Apply", True),
        ("argocd-controller", "Update", True),
    ],
)
def test_only_fields_written_imperatively_may_be_taken_over(
    manager: str, operation: str, refused: bool
) -> None:
    """Declared owners (Apply, GitOps, Helm, client-side apply) refuse a takeover."""
    obj = deployment(security={"privileged": True})
    path = "spec.template.spec.containers[name=app].securityContext.privileged"
    obj["metadata"]["managedFields"] = [
        {
            "manager": manager,
            "operation": operation,
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"app"}': {"f:securityContext": {"f:privileged": {}}}
                            }
                        }
                    }
                }
            },
        }
    ]
    assert (policy.takeover_refusal(obj, [path]) is not None) is refused
