"""Showing the demo as it happens: a rich Live board on a terminal, plain lines elsewhere.

Both displays are fed the same way: ``phase`` for the step under way, ``event`` for a line of
news (a detection, a fix, an audit record), and the topic records themselves through
``on_record``, from which they follow posture scores and approvals. On a terminal the board
redraws four times a second; in a CI log every piece of news is one timestamped line and
nothing is redrawn, so the log reads top to bottom.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Protocol

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from kposture.cli.demoing import observing, results
from kposture.schemas import audit, common, findings, posture, remediation

_SPARK = "▁▂▃▄▅▆▇█"
_OWNED_KINDS = frozenset({"ReplicaSet", "Pod"})
_STATUS_STYLE = {
    "fixed": "green",
    "detected": "yellow",
    "dry-run audited": "cyan",
    "awaiting approval": "magenta",
    "failed": "bold red",
}


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def sparkline(values: list[float], width: int = 24) -> str:
    """The last ``width`` values as a line of block characters (min to max of those values)."""
    tail = values[-width:]
    if not tail:
        return ""
    low, high = min(tail), max(tail)
    span = high - low
    if span <= 0:
        return _SPARK[-1] * len(tail)
    return "".join(_SPARK[round((v - low) / span * (len(_SPARK) - 1))] for v in tail)


def subject(ref: common.ObjectRef) -> str:
    """``namespace/Kind/name``, or ``Kind/name`` for a cluster-scoped object."""
    return ref.subject.removeprefix("/")


class Display(Protocol):
    """What the orchestration tells the user."""

    def phase(self, text: str) -> None: ...

    def event(self, text: str, *, style: str = "") -> None: ...

    def on_record(self, seen: observing.Seen) -> None: ...

    def __enter__(self) -> Display: ...

    def __exit__(self, *exc: object) -> None: ...


class _Base:
    """State both displays keep: the board's rows, the run id and the observer."""

    def __init__(
        self,
        console: Console,
        *,
        rows: list[results.ScenarioResult],
        observer: observing.Observer,
        clusters: list[str],
        run_id: str,
    ) -> None:
        self.console = console
        self.rows = rows
        self.observer = observer
        self.clusters = clusters
        self.run_id = run_id
        self.started = time.monotonic()
        self.current_phase = ""

    def elapsed(self) -> str:
        """Seconds since the demo started, for log lines."""
        return f"{time.monotonic() - self.started:6.1f}s"

    def ours(self, model: Any) -> bool:
        """Whether a record is about one of this run's objects (the rest is the fleet's noise)."""
        ref = getattr(model, "ref", None)
        if ref is None:
            return False
        return self.run_id in ref.namespace or self.run_id in ref.name

    def news(self, seen: observing.Seen) -> tuple[str, str] | None:
        """The line of news for a record about this run's objects, or None."""
        model = seen.model
        if not self.ours(model):
            return None
        if (
            isinstance(model, findings.Finding)
            and model.state in (findings.Transition.OPENED, findings.Transition.RESOLVED)
            # The ReplicaSets and Pods of a Deployment repeat its findings: news only once.
            and model.ref.kind not in _OWNED_KINDS
        ):
            style = "yellow" if model.state is findings.Transition.OPENED else "green"
            return (
                f"finding {model.state}: {model.cluster} {subject(model.ref)} "
                f"{model.baseline}/{model.check} ({model.severity})",
                style,
            )
        if isinstance(model, audit.AuditEvent) and model.action not in (
            audit.Action.SKIPPED,
            audit.Action.NO_OP,
        ):
            return (
                f"audit #{model.seq} {model.action} ({model.outcome}): {model.cluster} "
                f"{subject(model.ref)} {model.check}: {model.rationale[:90]}",
                "cyan",
            )
        return None


class PlainDisplay(_Base):
    """One line per piece of news, for logs and pipes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._scores: dict[str, float] = {}
        self._pending: set[str] = set()

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _line(self, text: str) -> None:
        self.console.print(f"[{self.elapsed()}] {text}", markup=False, highlight=False)

    def phase(self, text: str) -> None:
        """Announce a step."""
        self.current_phase = text
        self._line(f"== {text}")

    def event(self, text: str, *, style: str = "") -> None:
        """Print a line of news."""
        del style  # no colours in logs
        self._line(text)

    def on_record(self, seen: observing.Seen) -> None:
        """Print news about this run's objects, posture moves and new approval requests."""
        line = self.news(seen)
        if line is not None:
            self._line(line[0])
        model = seen.model
        if isinstance(model, posture.PostureSnapshot) and model.scope is posture.Scope.CLUSTER:
            before = self._scores.get(model.cluster)
            if before is None or abs(before - model.score) >= 0.05:
                was = "" if before is None else f"{before:.1f} -> "
                self._line(f"posture {model.cluster}: {was}{model.score:.1f}")
                self._scores[model.cluster] = model.score
        elif (
            isinstance(model, remediation.RemediationAction)
            and model.phase is remediation.Phase.PENDING_APPROVAL
            and model.action_id not in self._pending
        ):
            self._pending.add(model.action_id)
            self._line(
                f"approval waiting: {model.action_id} {model.cluster} {subject(model.ref)} "
                f"{model.check} ({model.risk})"
            )


class LiveDisplay(_Base):
    """A board redrawn in place: scenarios, posture per cluster, approvals, recent news."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events: collections.deque[tuple[str, str]] = collections.deque(maxlen=10)
        # Redrawn from the event loop, not from rich's refresh thread: the observer's state
        # changes on the loop, and a thread iterating it mid-change would fail.
        self._live = Live(console=self.console, auto_refresh=False, transient=False)
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> LiveDisplay:
        self._live.start()
        self._task = asyncio.get_running_loop().create_task(self._redraw(), name="demo-board")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self._live.update(self.render(), refresh=True)
        self._live.stop()

    async def _redraw(self) -> None:
        while True:
            self._live.update(self.render(), refresh=True)
            await asyncio.sleep(0.25)

    def phase(self, text: str) -> None:
        """Show the step under way in the title."""
        self.current_phase = text
        self._events.append((f"[{self.elapsed()}] == {text}", "bold"))

    def event(self, text: str, *, style: str = "") -> None:
        """Add a line to the news."""
        self._events.append((f"[{self.elapsed()}] {text}", style))

    def on_record(self, seen: observing.Seen) -> None:
        """Add news about this run's objects (posture and approvals are read when drawing)."""
        line = self.news(seen)
        if line is not None:
            self.event(line[0], style=line[1])

    def render(self) -> RenderableType:
        """The whole board."""
        return Group(
            Text(f"kposture demo  {self.elapsed()}  {self.current_phase}", style="bold"),
            self._scenario_table(),
            self._posture_table(),
            self._approvals_table(),
            Panel(
                Text("\n").join(Text(t, style=s) for t, s in self._events) or Text(""),
                title="news",
                box=box.ROUNDED,
            ),
        )

    def _scenario_table(self) -> Table:
        table = Table(title="drift scenarios", box=box.SIMPLE_HEAD, expand=True)
        for column in ("scenario", "where", "mode", "status", "detect", "remediate", "check"):
            table.add_column(column, no_wrap=column in ("detect", "remediate"))
        for row in self.rows:
            table.add_row(
                row.scenario.title,
                f"{row.cluster} {row.namespace or '-'}",
                str(row.scenario.mode),
                Text(row.status, style=_STATUS_STYLE.get(row.status, "")),
                _fmt_ms(row.detect_ms),
                _fmt_ms(row.remediate_ms),
                row.detected_check,
            )
        return table

    def _posture_table(self) -> Table:
        table = Table(title="posture score per cluster", box=box.SIMPLE_HEAD, expand=True)
        for column in ("cluster", "score", "lowest", "history"):
            table.add_column(column)
        for cluster in self.clusters:
            history = [score for _, score in self.observer.posture.get(cluster, [])]
            table.add_row(
                cluster,
                f"{history[-1]:.1f}" if history else "-",
                f"{min(history):.1f}" if history else "-",
                sparkline(history),
            )
        return table

    def _approvals_table(self) -> Table:
        pending = self.observer.pending_approvals()
        table = Table(title=f"approvals waiting ({len(pending)})", box=box.SIMPLE_HEAD, expand=True)
        for column in ("action", "cluster", "object", "check", "risk"):
            table.add_column(column)
        for action in pending[-6:]:
            table.add_row(
                action.action_id, action.cluster, subject(action.ref), action.check, action.risk
            )
        return table


def make(
    console: Console,
    *,
    rows: list[results.ScenarioResult],
    observer: observing.Observer,
    clusters: list[str],
    run_id: str,
) -> Display:
    """The live board on a terminal, plain lines otherwise."""
    kind = LiveDisplay if console.is_terminal else PlainDisplay
    return kind(console, rows=rows, observer=observer, clusters=clusters, run_id=run_id)
