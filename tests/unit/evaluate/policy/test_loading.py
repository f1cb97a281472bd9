"""Loading baselines: strict validation with errors that name the file, the line and the check."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kposture.evaluate.policy import baselines, loading

HEADER = """\
apiVersion: kposture.io/v1
kind: Baseline
name: demo
version: v1.2
checks:
"""


def load(checks: str) -> loading.Documents:
    return loading.load_documents(HEADER + textwrap.dedent(checks), filename="demo.yaml")


def test_a_valid_baseline_loads_with_its_checks() -> None:
    """A well-formed baseline yields frozen checks with their metadata."""
    documents = load(
        """\
        - id: noLatest
          title: Images are pinned
          severity: low
          controls: ["demo:1"]
          match: {apiGroups: [""], kinds: [Pod]}
          message: image uses latest
          validation: object.spec.containers.all(c, !c.image.endsWith(":latest"))
        """
    )
    (baseline,) = documents.baselines
    (check,) = baseline.checks
    assert (check.id, check.severity, check.controls) == ("noLatest", "low", ("demo:1",))


def test_a_cel_error_names_the_file_line_check_and_column() -> None:
    """A validation that does not compile is reported at its own line, with the check id."""
    with pytest.raises(loading.BaselineError) as caught:
        load(
            """\
            - id: runAsNonRoot
              title: t
              severity: high
              message: m
              validation: foo(object)
            """
        )
    error = caught.value
    assert (error.file, error.line, error.check_id) == ("demo.yaml", 10, "runAsNonRoot")
    assert str(error).startswith("demo.yaml:10: check 'runAsNonRoot': validation: ")
    assert "foo" in str(error)
    assert "column 1" in str(error)


def test_a_cel_error_inside_a_block_scalar_points_at_the_offending_line() -> None:
    """In a multi-line expression the reported line is the line of the bad token."""
    with pytest.raises(loading.BaselineError) as caught:
        load(
            """\
            - id: multi
              title: t
              severity: high
              message: m
              validation: |-
                has(object.spec) &&
                  object.spec.x &&
            """
        )
    assert caught.value.line == 12


def test_every_problem_is_reported_not_only_the_first() -> None:
    """Unknown keys, bad enums, wrong types and duplicate ids are all collected."""
    with pytest.raises(loading.BaselineError) as caught:
        load(
            """\
            - id: a
              title: t
              severity: urgent
              message: m
              validation: "true"
            - id: a
              title: t
              severity: low
              message: m
              validation: "true"
              colour: blue
            - id: b
              title: t
              severity: low
              message: m
              controls: notalist
              validation: "true"
            """
        )
    messages = [str(problem) for problem in caught.value.problems]
    assert any("demo.yaml:8: check 'a': severity must be one of" in m for m in messages)
    assert any("duplicate check id 'a'" in m for m in messages)
    assert any("demo.yaml:16: check 'a': unknown field 'colour'" in m for m in messages)
    assert any("check 'b': controls must be a list of strings" in m for m in messages)


def test_a_check_needs_exactly_one_of_validation_or_variants() -> None:
    """A check with neither a validation nor variants is rejected."""
    with pytest.raises(loading.BaselineError, match="exactly one of validation or variants"):
        load("- {id: a, title: t, severity: low, message: m}\n")


def test_duplicate_yaml_keys_are_errors() -> None:
    """A key written twice is an error, since PyYAML would silently keep the last."""
    with pytest.raises(loading.BaselineError, match=r"demo.yaml:8: duplicate key 'title'"):
        load("- id: a\n  title: t\n  title: u\n  severity: low\n  message: m\n")


def test_invalid_yaml_is_reported_with_its_line() -> None:
    """A YAML syntax error names the file and line."""
    with pytest.raises(loading.BaselineError, match=r"^demo.yaml:\d+: invalid YAML"):
        loading.load_documents("a: [1, 2\nb: c\n", filename="demo.yaml")


def test_unknown_document_kinds_and_api_versions_are_rejected() -> None:
    """Only kposture.io/v1 Baseline, Exception and BaselineTest documents are accepted."""
    with pytest.raises(loading.BaselineError) as caught:
        loading.load_documents("apiVersion: v2\nkind: Policy\n", filename="x.yaml")
    assert len(caught.value.problems) == 2


def test_a_file_path_is_read_and_named_in_errors(tmp_path: Path) -> None:
    """Loading from a Path uses the file name in error messages."""
    path = tmp_path / "broken.yaml"
    path.write_text(HEADER + "- {id: a, title: t, severity: low, message: m, validation: '1 +'}\n")
    with pytest.raises(loading.BaselineError) as caught:
        loading.load_documents(path)
    assert caught.value.file == "broken.yaml"


def test_extends_prepends_the_parent_checks() -> None:
    """A baseline that extends another holds the parent's checks, then its own."""
    documents = loading.load_documents(
        HEADER
        + "- {id: a, title: t, severity: low, message: m, validation: 'true'}\n"
        + "---\n"
        + HEADER.replace("name: demo", "name: child\nextends: [demo]")
        + "- {id: b, title: t, severity: low, message: m, validation: 'true'}\n",
        filename="two.yaml",
    )
    child = next(b for b in documents.baselines if b.name == "child")
    assert [check.id for check in child.checks] == ["a", "b"]


def test_pss_restricted_holds_every_pss_baseline_check() -> None:
    """The built-in restricted level includes the whole baseline level, as upstream."""
    base = {check.id for check in loading.builtin("pss-baseline").checks}
    restricted = {check.id for check in loading.builtin("pss-restricted").checks}
    assert base < restricted
    assert restricted - base == {
        "allowPrivilegeEscalation", "capabilities_restricted", "restrictedVolumes",
        "runAsNonRoot", "runAsUser", "seccompProfile_restricted", "procMount_restricted",
    }  # fmt: skip


def test_builtin_baselines_are_listed_without_their_fixture_files() -> None:
    """The built-in names are the baselines, not their .tests.yaml companions."""
    assert {"pss-baseline", "pss-restricted"} <= set(loading.builtin_names())
    assert not any(name.endswith(".tests") for name in loading.builtin_names())


def test_the_checks_of_a_version_come_from_the_variant_in_force() -> None:
    """Each check resolves to the variant with the greatest minVersion not after the version."""
    documents = load(
        """\
        - id: a
          title: t
          severity: low
          message: m
          variants:
            - {minVersion: v1.0, validation: "1 == 1"}
            - {minVersion: v1.1, validation: "2 == 2"}
        - {id: b, title: t, severity: low, message: m, minVersion: v1.1, validation: "true"}
        """
    )
    baseline = documents.baselines[0]
    old, new = baseline.at("v1.0"), baseline.at(None)
    assert [(r.id, r.validation) for r in old.rules] == [("a", "1 == 1")]
    assert [(r.id, r.validation) for r in new.rules] == [("a", "2 == 2"), ("b", "true")]
    assert new.version == "v1.2"
    assert baseline.at("v1.99").version == "v1.2"  # future versions evaluate as the latest


def test_a_malformed_version_reference_is_rejected() -> None:
    """Versions are v<major>.<minor>; anything else is a ValueError, not a silent latest."""
    with pytest.raises(ValueError, match="not a version"):
        loading.policy("pss-restricted@1.25")
    assert baselines.split_ref("pss-restricted@v1.25") == ("pss-restricted", "v1.25")
