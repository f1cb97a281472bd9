"""The demo from start to verdict, step by step, each step bounded in time.

Topics, policy, pipeline, workloads, a settled first evaluation, then the drift scenarios one at
a time, then the report. The pipeline is always stopped on the way out (also on Ctrl-C or a
failure); the environment is left running for a look around.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from kposture.cli.demoing import (
    display,
    injecting,
    kubeapi,
    manifests,
    observing,
    pipeline,
    reporting,
    results,
    scenarios,
)
from kposture.cli.devenv import environment
from kposture.runtime import kafka
from kposture.schemas import topics


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long each step may take, in seconds."""

    pipeline_ready_s: float = 120.0
    rollout_s: float = 90.0
    settle_s: float = 60.0
    quiet_s: float = 2.0  # no finding or audit record for this long (and no lag) = settled
    between_s: float = 15.0  # for the previous scenario's fixes to finish before the next
    scenario_s: float = 60.0


class DemoAbortedError(RuntimeError):
    """A step could not complete; the message says which and why."""

    retriable = False


@dataclasses.dataclass
class Run:
    """One demo run's identity and moving parts."""

    env: environment.Environment
    run_id: str
    prefix: str
    run_dir: Path
    clusters: dict[str, kubeapi.Cluster] = dataclasses.field(default_factory=dict)

    def cluster(self, index: int) -> kubeapi.Cluster:
        """The client of the environment's ``index``-th cluster."""
        return self.clusters[self.env.contexts[index]]


def new_run(env: environment.Environment) -> Run:
    """A fresh run id and topic prefix, so a rerun starts from empty topics and namespaces."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    prefix = f"demo{stamp}"
    return Run(env, secrets.token_hex(2), prefix, env.state_dir / "demo" / prefix)


def rows_for(run: Run) -> list[results.ScenarioResult]:
    """One empty result per scenario."""
    return [
        results.ScenarioResult(
            scenario=s,
            cluster=run.env.contexts[s.cluster],
            namespace=s.namespace(run.run_id),
            name=s.object_name(run.run_id),
        )
        for s in scenarios.SCENARIOS
    ]


async def main(
    run: Run, *, console: Console, limits: Limits, rows: list[results.ScenarioResult]
) -> dict[str, Any]:
    """Run the demo and return the report (as written to ``demo-report.json``)."""
    started = reporting.now_iso()
    t0 = time.monotonic()
    settings = pipeline.demo_settings(
        bootstrap=run.env.kafka_bootstrap,
        prefix=run.prefix,
        kubeconfig=run.env.kubeconfig,
        contexts=list(run.env.contexts),
        run_dir=run.run_dir,
        modes=dict(scenarios.REMEDIATE_MODES),
    )
    observer = observing.Observer(settings.kafka)
    proc = pipeline.Pipeline(settings, run_dir=run.run_dir)
    problems: list[str] = []
    board = display.make(
        console, rows=rows, observer=observer, clusters=list(run.env.contexts), run_id=run.run_id
    )
    observer.listeners.append(board.on_record)
    try:
        for cluster in settings.clusters:
            run.clusters[cluster.name] = await kubeapi.Cluster.connect(cluster)
        with board:
            try:
                await _steps(
                    run,
                    settings=settings,
                    observer=observer,
                    proc=proc,
                    board=board,
                    rows=rows,
                    limits=limits,
                )
            except (DemoAbortedError, pipeline.PipelineError, kubeapi.KubeError) as exc:
                problems.append(str(exc))
                board.event(f"aborted: {exc}", style="bold red")
            board.phase("stopping the pipeline")
            code = await proc.stop()
            if code not in (0, None):
                problems.append(f"kposture run exited with {code} when stopped")
    finally:
        await proc.stop()
        await observer.stop()
        for client in run.clusters.values():
            await client.close()
    chain = await reporting.verify_audit(settings.kafka)
    return reporting.build(
        run={
            "id": run.run_id,
            "topic_prefix": run.prefix,
            "started_at": started,
            "finished_at": reporting.now_iso(),
            "duration_s": round(time.monotonic() - t0, 1),
            "kafka_bootstrap": run.env.kafka_bootstrap,
            "kubeconfig": str(run.env.kubeconfig),
            "clusters": list(run.env.contexts),
            "namespaces": {
                t.namespace(run.run_id): {
                    "cluster": run.env.contexts[t.cluster],
                    "mode": str(t.mode),
                }
                for t in manifests.TENANTS
            },
            "remediate_modes": dict(scenarios.REMEDIATE_MODES),
            "baselines": list(settings.evaluate.baselines),
            "config": str(proc.config_path),
            "pipeline_log": str(proc.log_path),
        },
        rows=rows,
        observer=observer,
        chain=chain,
        clusters=list(run.env.contexts),
        run_id=run.run_id,
        problems=problems,
    )


async def _steps(
    run: Run,
    *,
    settings: Any,
    observer: observing.Observer,
    proc: pipeline.Pipeline,
    board: display.Display,
    rows: list[results.ScenarioResult],
    limits: Limits,
) -> None:
    board.phase(f"run {run.run_id}: clearing earlier demo runs")
    removed = await _clear_earlier_runs(run)
    if removed:
        board.event(f"deleting {removed} object(s) left by earlier demo runs")
    board.phase(f"creating topics {run.prefix}.*")
    await kafka.create_topics(settings.kafka)
    documents = await pipeline.publish_policy(settings)
    board.event(
        "policy published: "
        + ", ".join(f"{d.name}@{d.version}" for d in documents)
        + "; modes: "
        + ", ".join(f"{t.namespace(run.run_id)}={t.mode}" for t in manifests.TENANTS)
    )
    await observer.start()
    board.phase("starting the pipeline (kposture run: ingest, evaluate, remediate)")
    await proc.start()
    board.event(f"kposture run pid {proc.pid}, log {proc.log_path}")
    for cluster in run.env.contexts:
        await _until(
            proc,
            observer,
            topics.Topic.FINDINGS,
            lambda s, c=cluster: getattr(s.model, "cluster", None) == c,
            timeout_s=limits.pipeline_ready_s,
            what=f"the first findings of {cluster}",
        )
    board.event("pipeline up: findings flowing from every cluster")
    board.phase("deploying the workloads")
    created: set[str] = set()
    for tenant in manifests.TENANTS:
        created |= await _deploy(run.cluster(tenant.cluster), tenant, run.run_id)
    board.event(
        f"created {len(created)} objects in {len(manifests.TENANTS)} namespaces on 2 clusters"
    )
    for tenant in manifests.TENANTS:
        late = await run.cluster(tenant.cluster).wait_available(
            manifests.deployments(tenant, run.run_id), timeout_s=limits.rollout_s
        )
        if late:
            raise DemoAbortedError(f"deployments not rolled out in {limits.rollout_s:.0f}s: {late}")
    board.phase("waiting for the first evaluation to settle")
    groups = {
        settings.evaluate.app_id: topics.Topic.RESOURCES,
        settings.remediate.group_id: topics.Topic.FINDINGS,
    }
    busy = await observer.idle(
        keys=created, groups=groups, quiet_s=limits.quiet_s, timeout_s=limits.settle_s
    )
    if busy is not None:
        board.event(
            f"still waiting for {busy} after {limits.settle_s:.0f}s; going on", style="yellow"
        )
    proc.check()
    await _check_clean_start(run, observer, rows, board)
    scores = ", ".join(f"{c} {observer.score(c) or 0:.1f}" for c in run.env.contexts)
    board.event(f"settled; posture {scores}")
    for index, row in enumerate(rows, start=1):
        # One at a time: the previous scenario's fixes (canaries, backoffs) finish first, so
        # each scenario's timings are its own.
        busy = await observer.idle(
            keys=set(), groups=groups, quiet_s=limits.quiet_s, timeout_s=limits.between_s
        )
        if busy is not None:
            board.event(f"still waiting for {busy}; going on", style="yellow")
        board.phase(f"scenario {index}/{len(rows)}: {row.scenario.title}")
        proc.check()
        await injecting.play(
            row,
            cluster=run.cluster(row.scenario.cluster),
            observer=observer,
            show=board,
            run_id=run.run_id,
            timeout_s=limits.scenario_s,
        )
    board.phase("letting posture catch up")
    await observer.quiet(for_s=2.0, timeout_s=10.0)


async def _until(
    proc: pipeline.Pipeline,
    observer: observing.Observer,
    topic: topics.Topic,
    match: Any,
    *,
    timeout_s: float,
    what: str,
) -> None:
    """Wait for a record, checking every second that the pipeline still runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.check()
        if await observer.first(topic, match, timeout_s=1.0) is not None:
            return
    raise DemoAbortedError(f"no sign of {what} within {timeout_s:.0f}s; see {proc.log_path}")


async def _clear_earlier_runs(run: Run) -> int:
    """Delete what earlier demo runs left (their namespaces and cluster-scoped objects)."""
    removed = 0
    selector = f"{manifests.DEMO_LABEL}=true,{manifests.RUN_LABEL}!={run.run_id}"
    for client in run.clusters.values():
        for kind in ("Namespace", "ClusterRoleBinding"):
            for item in await client.list_all(kind, label_selector=selector):
                meta = item.get("metadata") or {}
                if meta.get("deletionTimestamp"):
                    continue
                await client.delete(kind, name=meta["name"])
                removed += 1
    return removed


async def _deploy(client: kubeapi.Cluster, tenant: manifests.Tenant, run_id: str) -> set[str]:
    """Create one tenant's objects; their resource keys (``cluster/uid``)."""
    objects = manifests.tenant_objects(tenant, run_id)
    ns = tenant.namespace(run_id)
    created = [await client.create(objects[0])]
    await ensure_default_account(client, ns, run_id)
    created.extend([await client.create(manifest) for manifest in objects[1:]])
    return {f"{client.name}/{obj['metadata']['uid']}" for obj in created}


async def ensure_default_account(client: kubeapi.Cluster, ns: str, run_id: str) -> None:
    """Give the namespace's ``default`` ServiceAccount no automounted token.

    The controller manager creates that account moments after the namespace; whichever of us
    comes first, the result is the same account without the token.
    """
    account = manifests.default_service_account(ns, run_id=run_id)
    try:
        await client.create(account)
    except kubeapi.KubeError:
        await client.patch(
            "ServiceAccount",
            namespace=ns,
            name="default",
            patch={"automountServiceAccountToken": False},
        )


async def _check_clean_start(
    run: Run,
    observer: observing.Observer,
    rows: list[results.ScenarioResult],
    board: display.Display,
) -> None:
    """Warn when an object a scenario patches already fails one of its checks."""
    for row in rows:
        s = row.scenario
        if s.op is not scenarios.Op.PATCH:
            continue
        obj = await run.cluster(s.cluster).get(s.kind, namespace=row.namespace, name=row.name)
        uid = str(((obj or {}).get("metadata") or {}).get("uid", ""))
        already = [
            f.check
            for f in observer.open.values()
            if f.cluster == row.cluster and f.ref.uid == uid and f.check in s.checks
        ]
        if already:
            board.event(
                f"{s.id}: {row.namespace}/{row.name} already fails {', '.join(sorted(already))}",
                style="yellow",
            )
