"""Transitions of findings: opened, updated, resolved, waived, and never the same state twice."""

from __future__ import annotations

import datetime as dt

import msgspec

from kposture.evaluate.engine import tracking
from kposture.evaluate.policy import baselines, waivers
from kposture.schemas import common, findings

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
REF = common.ObjectRef(api_version="v1", kind="Pod", name="api-1", uid="u1", namespace="shop")


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def verdict(
    check: str = "privileged",
    result: common.Result = common.Result.FAIL,
    *,
    message: str = "privileged container",
    severity: common.Severity = common.Severity.HIGH,
    version: str = "v1.0",
    fix_risk: findings.Risk | None = None,
) -> tracking.Verdict:
    """A verdict of the test baseline."""
    return tracking.Verdict(
        baseline="test",
        baseline_version=version,
        check=check,
        result=result,
        severity=severity,
        controls=(f"test:{check}",),
        message=message if result is common.Result.FAIL else "",
        path="spec.containers[0].securityContext.privileged",
        title=check,
        fix_risk=fix_risk,
    )


def context(clock: FakeClock, **changes: object) -> tracking.Context:
    """The context of the test pod at the clock's time."""
    base = tracking.Context(
        cluster="c1", ref=REF, labels={"app": "api"}, observed_at=clock(), now=clock()
    )
    return msgspec.structs.replace(base, **changes)


def states(outcome: tracking.Outcome) -> list[tuple[str, findings.Transition]]:
    """The (check, transition) pairs of an outcome."""
    return [(f.check, f.state) for f in outcome.transitions]


def waiver(
    expires: dt.datetime | None, checks: tuple[str, ...] = ("privileged",)
) -> waivers.Waiver:
    """An exception for the shop namespace."""
    return waivers.Waiver(
        name="shop-legacy",
        scope=waivers.Scope(namespaces=("shop",)),
        checks=checks,
        reason="legacy image",
        owner="team-shop",
        ticket="SEC-1",
        expires=expires,
    )


def test_a_failing_check_opens_once_and_stays_quiet_when_repeated() -> None:
    """A failure opens a finding; the same failure again emits nothing."""
    clock = FakeClock()
    first = tracking.track((), [verdict()], context(clock))
    assert states(first) == [("privileged", findings.Transition.OPENED)]
    clock.advance(seconds=5)
    again = tracking.track(first.open, [verdict()], context(clock))
    assert again.transitions == []
    assert again.open == first.open


def test_passing_checks_that_were_never_open_emit_nothing() -> None:
    """A pass with nothing open is not news."""
    outcome = tracking.track((), [verdict(result=common.Result.PASS)], context(FakeClock()))
    assert outcome.transitions == []
    assert outcome.open == ()


def test_a_changed_message_or_severity_is_an_update_keeping_first_seen() -> None:
    """Message and severity changes emit ``updated`` with the original first_seen."""
    clock = FakeClock()
    opened = tracking.track((), [verdict()], context(clock))
    clock.advance(minutes=1)
    changed = tracking.track(opened.open, [verdict(message="other")], context(clock))
    assert states(changed) == [("privileged", findings.Transition.UPDATED)]
    assert changed.transitions[0].first_seen == T0
    assert changed.transitions[0].detected_at == T0 + dt.timedelta(minutes=1)
    worse = tracking.track(
        changed.open, [verdict(message="other", severity=common.Severity.CRITICAL)], context(clock)
    )
    assert states(worse) == [("privileged", findings.Transition.UPDATED)]


def test_a_new_baseline_version_updates_the_finding_and_names_the_version() -> None:
    """A still-failing check under a new policy version is reported with that version."""
    clock = FakeClock()
    opened = tracking.track((), [verdict()], context(clock))
    moved = tracking.track(opened.open, [verdict(version="v2.0")], context(clock))
    assert states(moved) == [("privileged", findings.Transition.UPDATED)]
    assert moved.transitions[0].baseline_version == "v2.0"


def test_a_priority_change_from_exposure_is_an_update() -> None:
    """The same failure behind a LoadBalancer is more urgent, and that is news."""
    clock = FakeClock()
    opened = tracking.track((), [verdict()], context(clock))
    exposed = tracking.Exposure(externally_exposed=True, criticality="critical")
    raised = tracking.refresh(opened.open, context(clock, exposure=exposed))
    assert states(raised) == [("privileged", findings.Transition.UPDATED)]
    assert raised.transitions[0].priority > opened.transitions[0].priority


def test_a_fixed_object_resolves_its_finding() -> None:
    """A pass after a failure resolves the finding, naming the passing version."""
    clock = FakeClock()
    opened = tracking.track((), [verdict()], context(clock))
    fixed = tracking.track(opened.open, [verdict(result=common.Result.PASS)], context(clock))
    assert states(fixed) == [("privileged", findings.Transition.RESOLVED)]
    assert fixed.transitions[0].result is common.Result.PASS
    assert fixed.open == ()


def test_a_check_removed_from_the_policy_resolves_its_finding() -> None:
    """A finding whose check no longer runs is resolved as no longer applying."""
    clock = FakeClock()
    opened = tracking.track((), [verdict()], context(clock))
    removed = tracking.track(opened.open, [], context(clock))
    assert states(removed) == [("privileged", findings.Transition.RESOLVED)]
    assert removed.transitions[0].result is common.Result.SKIP


def test_deleting_an_object_resolves_all_its_open_findings() -> None:
    """A delete resolves every open finding of the object and keeps nothing."""
    clock = FakeClock()
    opened = tracking.track((), [verdict("a"), verdict("b"), verdict("c")], context(clock))
    deleted = tracking.gone(opened.open, context(clock))
    assert sorted(states(deleted)) == [
        ("a", findings.Transition.RESOLVED),
        ("b", findings.Transition.RESOLVED),
        ("c", findings.Transition.RESOLVED),
    ]
    assert deleted.open == ()
    assert tracking.gone(deleted.open, context(clock)).transitions == []


def test_an_error_is_reported_distinctly_and_never_offers_remediation() -> None:
    """A check that could not be evaluated opens with result error and no remediation."""
    clock = FakeClock()
    error = verdict(result=common.Result.ERROR, fix_risk=findings.Risk.SAFE)
    outcome = tracking.track((), [error], context(clock))
    finding = outcome.transitions[0]
    assert finding.result is common.Result.ERROR
    assert finding.remediation.available is False
    failing = tracking.track(outcome.open, [verdict(fix_risk=findings.Risk.SAFE)], context(clock))
    assert states(failing) == [("privileged", findings.Transition.UPDATED)]
    assert failing.transitions[0].remediation.available is True


def test_an_exception_waives_and_its_expiry_reopens_by_itself() -> None:
    """A waived finding reopens once the fake clock passes the exception's expiry."""
    clock = FakeClock()
    active = (waiver(T0 + dt.timedelta(hours=1)),)
    waived = tracking.track((), [verdict()], context(clock, waivers=active))
    assert states(waived) == [("privileged", findings.Transition.WAIVED)]
    assert waived.transitions[0].exception is not None
    assert waived.transitions[0].exception.ticket == "SEC-1"
    assert waived.transitions[0].remediation.available is False
    clock.advance(minutes=59)
    assert tracking.refresh(waived.open, context(clock, waivers=active)).transitions == []
    assert tracking.next_expiry(active, clock()) == T0 + dt.timedelta(hours=1)
    clock.advance(minutes=1)
    reopened = tracking.refresh(waived.open, context(clock, waivers=active))
    assert states(reopened) == [("privileged", findings.Transition.OPENED)]
    assert reopened.transitions[0].first_seen == T0
    assert reopened.transitions[0].exception is None
    assert tracking.refresh(reopened.open, context(clock, waivers=active)).transitions == []


def test_an_exception_published_later_waives_an_open_finding() -> None:
    """A new exception turns an open finding into a waived one, once."""
    clock = FakeClock()
    opened = tracking.track((), [verdict()], context(clock))
    active = (waiver(None),)
    waived = tracking.refresh(opened.open, context(clock, waivers=active))
    assert states(waived) == [("privileged", findings.Transition.WAIVED)]
    assert tracking.refresh(waived.open, context(clock, waivers=active)).transitions == []


def test_a_waived_finding_that_gets_fixed_resolves() -> None:
    """Fixing a waived failure resolves it like any other."""
    clock = FakeClock()
    active = (waiver(None),)
    waived = tracking.track((), [verdict()], context(clock, waivers=active))
    fixed = tracking.track(
        waived.open, [verdict(result=common.Result.PASS)], context(clock, waivers=active)
    )
    assert states(fixed) == [("privileged", findings.Transition.RESOLVED)]


def test_priority_combines_severity_with_exposure_and_criticality() -> None:
    """Exposure and a critical namespace raise priority; a low-criticality one lowers it."""
    plain = tracking.priority(common.Severity.MEDIUM, tracking.Exposure())
    exposed = tracking.priority(common.Severity.MEDIUM, tracking.Exposure(externally_exposed=True))
    critical = tracking.priority(common.Severity.MEDIUM, tracking.Exposure(criticality="critical"))
    low = tracking.priority(common.Severity.MEDIUM, tracking.Exposure(criticality="low"))
    assert low < plain < exposed < critical
    top = tracking.Exposure(True, True, "critical")
    assert tracking.priority(common.Severity.CRITICAL, top) == 100


def test_exposure_comes_from_services_ingresses_host_network_and_namespace_labels() -> None:
    """LoadBalancer Services, Ingresses and host ports are exposure; labels set criticality."""
    lb = {"kind": "Service", "spec": {"type": "LoadBalancer"}}
    cluster_ip = {"kind": "Service", "spec": {"type": "ClusterIP"}}
    ingress = {"kind": "Ingress", "spec": {}}
    deployment = {
        "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": [{"ports": [{"hostPort": 80}]}]}}},
    }
    namespace = {"metadata": {"labels": {tracking.CRITICALITY_LABEL: "high"}}}
    assert tracking.exposure_of(lb, None).externally_exposed
    assert not tracking.exposure_of(cluster_ip, None).externally_exposed
    assert tracking.exposure_of(ingress, None).externally_exposed
    assert tracking.exposure_of(deployment, namespace) == tracking.Exposure(True, False, "high")


def test_owner_comes_from_the_object_then_from_its_namespace() -> None:
    """``owner``/``team`` labels or annotations name the owner; the namespace's are the fallback."""
    namespace = {"metadata": {"labels": {"team": "payments"}}}
    labelled = {"metadata": {"labels": {"owner": "alice"}}}
    annotated = {"metadata": {"annotations": {"team": "search"}}}
    assert tracking.owner_of(labelled, namespace) == "alice"
    assert tracking.owner_of(annotated, namespace) == "search"
    assert tracking.owner_of({"metadata": {}}, namespace) == "payments"
    assert tracking.owner_of({"metadata": {}}, None) is None


def test_a_fix_is_offered_only_for_failures_with_a_fix() -> None:
    """Remediation is available when the failing check declares a fix."""
    clock = FakeClock()
    outcome = tracking.track((), [verdict(fix_risk=findings.Risk.SAFE)], context(clock))
    assert outcome.transitions[0].remediation == findings.Remediation(
        available=True, risk=findings.Risk.SAFE
    )
    assert baselines.Risk.SAFE is findings.Risk.SAFE


def test_surroundings_expose_the_pods_services_select_and_name_privileged_accounts() -> None:
    """A pod or a workload's template is exposed when an exposing Service selects its labels,
    and privileged when it runs as an account the namespace's RBAC lets read secrets."""
    around = tracking.Surroundings(
        selectors=((("app", "web"),), (("app", "api"), ("tier", "front"))),
        privileged=frozenset({"default", "ops"}),
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"labels": {"app": "web", "pod-template-hash": "x"}},
        "spec": {"serviceAccountName": "app", "containers": []},
    }
    assert tracking.exposure_of(pod, None, around) == tracking.Exposure(True, False, None)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"labels": {"app": "web"}},  # the object's own labels are not selected
        "spec": {"template": {"metadata": {"labels": {"app": "api"}}, "spec": {}}},
    }
    # Half a selector is no match; no account means "default".
    assert tracking.exposure_of(deployment, None, around) == tracking.Exposure(False, True, None)
    deployment["spec"]["template"]["metadata"]["labels"]["tier"] = "front"
    assert tracking.exposure_of(deployment, None, around).externally_exposed
    # Without surroundings (scan), or for an object without pods, none of this applies.
    assert tracking.exposure_of(pod, None) == tracking.Exposure()
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"labels": {"app": "web"}}}
    assert tracking.exposure_of(service, None, around) == tracking.Exposure()
