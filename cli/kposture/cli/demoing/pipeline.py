"""The pipeline under demonstration: ``kposture run`` as a child process, and its settings.

A child process keeps faust (its signal handlers, its logging, its event-loop habits) away
from the demo's own loop and terminal, and shows the product as users run it: one config file,
one command. It is stopped with SIGTERM, which ``kposture run`` turns into a clean stop of all
three services; SIGKILL only if that takes too long.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import msgspec

from kposture.evaluate import loading, policy_store
from kposture.runtime import kafka
from kposture.runtime import settings as settings_mod
from kposture.schemas import codec, envelope, policy, topics

_ENTRY = "from kposture.cli.main import main; main()"


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
    paths = [loading.builtin_path(ref.split("@")[0]) for ref in settings.evaluate.baselines]
    documents = [
        d
        for d in policy_store.documents_from_paths(paths, publisher="kposture-demo")
        if d.name in {ref.split("@")[0] for ref in settings.evaluate.baselines}
    ]
    producer = kafka.producer(settings.kafka, client_id="kposture-demo-policy")
    await producer.start()
    try:
        topic = kafka.topic_name(settings.kafka, topics.Topic.BASELINES)
        for document in documents:
            event = envelope.wrap(
                document,
                event_type=codec.POLICY_TYPE,
                source="kposture://-/cli/kposture-demo",
                subject=document.key,
            )
            await kafka.publish(producer, topic, key=document.key, event=event)
    finally:
        await producer.stop()
    return documents


class PipelineError(RuntimeError):
    """The pipeline process could not start or died; the message carries its last log lines."""

    retriable = False


class Pipeline:
    """``kposture run --config FILE`` in a child process, logging to a file."""

    def __init__(self, settings: settings_mod.Settings, *, run_dir: Path) -> None:
        self.settings = settings
        self.config_path = run_dir / "kposture.yaml"
        self.log_path = run_dir / "pipeline.log"
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Write the config file and start the process."""
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(settings_mod.dump(self.settings))
        # The config file is the whole truth of a demo run: setting overrides from the
        # environment (KPOSTURE_<SECTION>__<FIELD>) would silently change what is shown.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(settings_mod.ENV_PREFIX) or k == "KPOSTURE_HOME"
        }
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _ENTRY,
                "run",
                "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                # Its own process group: a Ctrl-C in the demo's terminal reaches the demo,
                # which then stops the pipeline in order instead of both dying at once.
                start_new_session=True,
            )

    @property
    def pid(self) -> int | None:
        """The process id, once started."""
        return None if self._process is None else self._process.pid

    def check(self) -> None:
        """Raise :class:`PipelineError` if the process has exited."""
        if self._process is not None and self._process.returncode is not None:
            raise PipelineError(
                f"kposture run exited with {self._process.returncode}; last log lines:\n"
                + self.tail()
            )

    async def stop(self, *, timeout_s: float = 30.0) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``); its exit code."""
        process = self._process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return process.returncode

    def tail(self, lines: int = 15) -> str:
        """The last lines of the pipeline's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def settings_json(settings: settings_mod.Settings) -> dict[str, object]:
    """The settings as plain data, for the report."""
    out: dict[str, object] = msgspec.to_builtins(settings)
    return out
