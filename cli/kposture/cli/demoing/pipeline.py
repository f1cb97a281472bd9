"""The pipeline under demonstration: ``kposture run`` as a child process, and its settings.

A child process keeps faust (its signal handlers, its logging, its event-loop habits) away
from the demo's own loop and terminal, and shows the product as users run it: one config file,
one command. It is stopped with SIGTERM, which ``kposture run`` turns into a clean stop of all
three services; SIGKILL only if that takes too long.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from kposture.cli import evaluate_cmd, localops
from kposture.evaluate.policy import baselines, loading
from kposture.evaluate.policy import store as policy_store
from kposture.runtime import settings as settings_mod
from kposture.schemas import policy


def demo_settings(
    *,
    bootstrap: str,
    prefix: str,
    kubeconfig: Path,
    contexts: list[str],
    run_dir: Path,
    modes: dict[str, str],
) -> settings_mod.Settings:
    """The settings of one demo run: fresh topics, consumer groups and state; no HTTP ports.

    A fresh topic prefix, evaluate app id and remediate group per run make a rerun start from
    nothing. HTTP ports are off (0) so the demo never clashes with services already running.
    The canary soak is shorter than the production default so the demo stays short.
    """
    no_http = settings_mod.HttpSettings(port=0)
    return settings_mod.Settings(
        kafka=settings_mod.KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix),
        clusters=[
            settings_mod.ClusterSettings(name=c, kubeconfig=str(kubeconfig), context=c)
            for c in contexts
        ],
        ingest=settings_mod.IngestSettings(http=no_http),
        evaluate=settings_mod.EvaluateSettings(
            app_id=f"{prefix}-evaluate",
            data_dir=str(run_dir / "evaluate"),
            posture_interval_s=30.0,
            http=no_http,
        ),
        remediate=settings_mod.RemediateSettings(
            default_mode="observe",
            modes=modes,
            canary_soak_s=2.0,
            canary_timeout_s=60.0,
            group_id=f"{prefix}-remediate",
            http=no_http,
        ),
        telemetry=settings_mod.TelemetrySettings(log_level="INFO", log_format="json"),
    )


async def publish_policy(settings: settings_mod.Settings) -> list[policy.PolicyDocument]:
    """Publish the built-in baselines in force to the baselines topic, as a platform team would.

    Evaluate would run them anyway when nothing is published; publishing makes the policy
    version explicit on the topic, and every finding names it.
    """
    names = list(dict.fromkeys(baselines.split_ref(ref)[0] for ref in settings.evaluate.baselines))
    paths = [loading.builtin_path(name) for name in names]
    documents = [
        d
        for d in policy_store.documents_from_paths(paths, publisher="kposture-demo")
        if d.name in names
    ]
    await evaluate_cmd.publish_documents(settings, documents)
    return documents


class PipelineError(localops.ProcessError):
    """The pipeline process could not start or died; the message carries its last log lines."""


class Pipeline(localops.ChildProcess):
    """``kposture run --config FILE`` in a child process, logging to a file."""

    error = PipelineError
    stop_timeout_s = 30.0

    def __init__(self, settings: settings_mod.Settings, *, run_dir: Path) -> None:
        super().__init__(
            "run",
            label="kposture run",
            config_path=run_dir / "kposture.yaml",
            log_path=run_dir / "pipeline.log",
        )
        self.settings = settings

    async def start(self) -> None:
        """Write the config file and start the process."""
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(settings_mod.dump(self.settings))
        await super().start()

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return None if self._process is None else self._process.pid


def settings_json(settings: settings_mod.Settings) -> dict[str, object]:
    """The settings as plain data, for the report."""
    out: dict[str, object] = msgspec.to_builtins(settings)
    return out
