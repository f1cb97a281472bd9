"""Exceptions: scope matching, and expiry decided by an injected clock."""

from __future__ import annotations

import datetime as dt

import pytest

from kposture.evaluate.policy import loading, waivers

DOCUMENT = """\
apiVersion: kposture.io/v1
kind: Exception
name: legacy-privileged
scope:
  clusters: [prod-eu]
  namespaces: [legacy]
  names: ["agent-*"]
  objectSelector: {matchLabels: {team: infra}}
checks: [pss-restricted/privileged, hostPorts]
reason: The node agent needs privileged mode until it moves to a DaemonSet API.
owner: infra-team
ticket: SEC-1234
expires: 2025-03-01T00:00:00Z
"""

BEFORE = dt.datetime(2025, 2, 28, 23, 59, tzinfo=dt.UTC)
AFTER = dt.datetime(2025, 3, 1, 0, 0, tzinfo=dt.UTC)


def waiver() -> waivers.Waiver:
    (loaded,) = loading.load_documents(DOCUMENT, filename="exceptions.yaml").waivers
    return loaded


def context(**overrides: str) -> waivers.FindingContext:
    fields = {
        "cluster": "prod-eu",
        "baseline": "pss-restricted",
        "check_id": "privileged",
        "kind": "Deployment",
        "name": "agent-7f9c",
        "namespace": "legacy",
    }
    fields.update(overrides)
    return waivers.FindingContext(**fields, labels={"team": "infra"})


def test_an_exception_waives_a_finding_in_its_scope_until_it_expires() -> None:
    """The exception applies before its expiry and stops applying by itself at the expiry."""
    loaded = waiver()
    assert loaded.applies(context(), BEFORE)
    assert not loaded.applies(context(), AFTER)


def test_find_waiver_uses_the_injected_clock() -> None:
    """``find_waiver`` asks the clock for the time, so tests control expiry."""
    loaded = [waiver()]
    assert waivers.find_waiver(loaded, context(), clock=lambda: BEFORE) is loaded[0]
    assert waivers.find_waiver(loaded, context(), clock=lambda: AFTER) is None


@pytest.mark.parametrize(
    "overrides",
    [
        {"cluster": "prod-us"},
        {"namespace": "apps"},
        {"name": "web-1"},
        {"check_id": "runAsNonRoot"},
        {"baseline": "pss-baseline"},  # privileged is qualified by pss-restricted
    ],
)
def test_an_exception_does_not_reach_outside_its_scope(overrides: dict[str, str]) -> None:
    """Another cluster, namespace, name, check or baseline is not waived."""
    assert not waiver().applies(context(**overrides), BEFORE)


def test_an_unqualified_check_id_applies_in_every_baseline() -> None:
    """A bare check id waives that check whichever baseline reports it."""
    assert waiver().applies(context(check_id="hostPorts", baseline="pss-baseline"), BEFORE)


def test_an_exception_requires_an_expiry_with_an_offset() -> None:
    """A naive expiry is rejected, since "midnight" in which zone is ambiguous."""
    text = DOCUMENT.replace("2025-03-01T00:00:00Z", '"2025-03-01T00:00:00"')
    with pytest.raises(loading.BaselineError, match="expires needs a UTC offset"):
        loading.load_documents(text, filename="exceptions.yaml")


def test_an_exception_may_explicitly_never_expire() -> None:
    """``expires: never`` is the explicit opt-out of expiry."""
    text = DOCUMENT.replace("2025-03-01T00:00:00Z", "never")
    (loaded,) = loading.load_documents(text, filename="exceptions.yaml").waivers
    assert loaded.applies(context(), dt.datetime(2999, 1, 1, tzinfo=dt.UTC))
