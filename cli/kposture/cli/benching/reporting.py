"""The bench's outputs: latency statistics, the JSON report and the PNG of the distributions.

The JSON's required keys are the contract of ``kposture bench`` (issue 6); everything else in
it (counts, the write mix, each process's CPU and memory, the targets and how far off they
are) is there to explain the required numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

TARGETS: Mapping[str, float] = {
    "detection_p99_ms": 1000.0,  # DESIGN.md section 6: p99 <= 1 s, write to finding on Kafka
    "detection_goal_ms": 250.0,
    "events_per_cpu_second": 20_000.0,
    "mib_per_100k_objects": 150.0,
}
"""The quality bars of DESIGN.md section 6 that the bench measures."""


def distribution(values_ms: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p99, max and mean of latencies in milliseconds (zeros when empty)."""
    if not values_ms:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    ordered = sorted(values_ms)
    if len(ordered) > 1:
        p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98]
    else:
        p99 = ordered[0]
    return {
        "count": len(ordered),
        "p50": round(statistics.median(ordered), 1),
        "p99": round(p99, 1),
        "max": round(ordered[-1], 1),
        "mean": round(statistics.fmean(ordered), 1),
    }


def verdicts(report: Mapping[str, Any]) -> dict[str, Any]:
    """Each target, the measured value, whether it is met and by what factor it is missed."""
    measured = {
        "detection_p99_ms": report["detection_latency_ms"]["p99"],
        "events_per_cpu_second": report["evaluate"]["events_per_cpu_second"],
        "mib_per_100k_objects": report["memory"]["mib_per_100k_objects"],
    }
    out: dict[str, Any] = {}
    for name, value in measured.items():
        target = TARGETS[name]
        higher_is_better = name == "events_per_cpu_second"
        met = value >= target if higher_is_better else value <= target
        # How many times better the measurement must get to meet the target (None: met, or
        # nothing was measured).
        factor = (target / value if higher_is_better else value / target) if value > 0 else None
        out[name] = {
            "target": target,
            "measured": value,
            "met": met,
            "off_by_factor": None if met or factor is None else round(factor, 2),
        }
    return out


def write(report: Mapping[str, Any], output: Path) -> None:
    """Write the report as indented JSON to ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def plot_path(output: Path) -> Path:
    """Where the plot goes: next to the JSON, with the same stem."""
    return output.with_suffix(".png")


def plot(
    path: Path,
    *,
    detection_ms: Sequence[float],
    remediation_ms: Mapping[str, Sequence[float]],
    title: str,
) -> None:
    """Two panels: the detection histogram, and the CDFs of every latency, with the targets."""
    # Imported here: matplotlib takes about a second to import and only the plot needs it.
    import matplotlib as mpl

    mpl.use("Agg")  # no display here or in CI; must precede pyplot's import
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True)
    figure.suptitle(title, fontsize=11)
    if detection_ms:
        bins = max(10, min(60, len(detection_ms) // 4))
        left.hist(detection_ms, bins=bins, color="#4477aa", edgecolor="white")
        stats = distribution(detection_ms)
        for name, style in (("p50", "--"), ("p99", ":")):
            left.axvline(
                stats[name], color="#222222", linestyle=style, label=f"{name} {stats[name]:.0f} ms"
            )
    left.axvline(TARGETS["detection_p99_ms"], color="#cc3311", label="target p99 1000 ms")
    left.set_title(f"Detection latency, write -> opened finding (n={len(detection_ms)})")
    left.set_xlabel("milliseconds")
    left.set_ylabel("violating writes")
    left.legend(loc="upper right", fontsize=8)

    series = {
        "detection": detection_ms,
        **{f"remediation ({k})": v for k, v in remediation_ms.items()},
    }
    for (label, values), color in zip(
        series.items(), ("#4477aa", "#228833", "#ee7733", "#aa3377"), strict=False
    ):
        if not values:
            continue
        ordered = sorted(values)
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        right.step(
            ordered, fractions, where="post", color=color, label=f"{label} (n={len(ordered)})"
        )
    right.axvline(TARGETS["detection_p99_ms"], color="#cc3311", linewidth=0.8)
    right.axhline(0.99, color="#888888", linestyle=":", linewidth=0.8)
    right.set_xscale("log")
    right.set_ylim(0, 1.02)
    right.set_title("Cumulative distributions (remediation from the opened finding)")
    right.set_xlabel("milliseconds (log scale)")
    right.set_ylabel("fraction")
    right.grid(True, which="both", alpha=0.3)
    right.legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=110)
    plt.close(figure)
