"""Settings: defaults, file values, environment overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kposture.runtime import settings


def test_defaults_work_with_no_file_and_no_environment() -> None:
    """A fresh install needs no configuration: every field has a working default."""
    s = settings.load(None, environ={})
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert s.remediate.default_mode == "observe"
    assert s.remediate.patches_per_second == 1.0
    assert s.remediate.burst == 5


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    """KPOSTURE_<SECTION>__<FIELD> wins over the file, and values arrive typed."""
    path = tmp_path / "c.yaml"
    path.write_text("remediate:\n  burst: 3\nclusters:\n  - name: a\n    context: ctx-a\n")
    s = settings.load(
        path,
        environ={
            "KPOSTURE_REMEDIATE__BURST": "9",
            "KPOSTURE_KAFKA_BOOTSTRAP": "127.0.0.1:1234",
            "KPOSTURE_HOME": "/not/a/setting",
        },
    )
    assert s.remediate.burst == 9
    assert s.kafka.bootstrap_servers == "127.0.0.1:1234"
    assert s.clusters[0].context == "ctx-a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("remediate:\n  burst: many\n", r"remediate\.burst"),
        ("kafka:\n  bootstrap: x\n", "unknown field `bootstrap`"),
        ("- just a list\n", "top level must be a mapping"),
        ("kafka: [unclosed\n", r"c\.yaml:\d+: invalid YAML"),
    ],
)
def test_invalid_settings_name_the_file_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    """A bad value, an unknown key or broken YAML is rejected with a message that locates it."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(settings.SettingsError, match=message) as info:
        settings.load(path, environ={})
    assert str(path) in str(info.value)


def test_dump_round_trips_through_load(tmp_path: Path) -> None:
    """What `kposture dev config` prints is a valid config file for the services."""
    original = settings.Settings(clusters=[settings.ClusterSettings(name="c", context="c")])
    path = tmp_path / "c.yaml"
    path.write_text(settings.dump(original))
    assert settings.load(path, environ={}) == original
