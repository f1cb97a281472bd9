"""The health endpoint and trace-context propagation through Kafka headers."""

from __future__ import annotations

import aiohttp
import prometheus_client
from opentelemetry import trace

from kposture.runtime import health, tracing


async def test_readyz_reports_each_check_and_fails_while_a_critical_one_fails() -> None:
    """/readyz is 503 with details until every critical check is ok; /metrics serves metrics."""
    readiness = health.Readiness()
    registry = prometheus_client.CollectorRegistry()
    prometheus_client.Counter("kposture_test_total", "test", registry=registry).inc()
    runner = await health.serve(
        health.make_app(readiness, registry=registry), host="127.0.0.1", port=0
    )
    try:
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        readiness.report("cluster:a", ok=True, detail="watching")
        readiness.report("cluster:b", ok=False, detail="401 Unauthorized", critical=False)
        readiness.report("kafka", ok=False, detail="unreachable")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/readyz") as resp:
                body = await resp.json()
                assert resp.status == 503
                assert body["checks"]["cluster:b"]["detail"] == "401 Unauthorized"
            readiness.report("kafka", ok=True)
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200  # cluster:b is not critical
            async with http.get(f"{base}/livez") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                assert "kposture_test_total 1.0" in await resp.text()
    finally:
        await runner.cleanup()


def test_trace_context_survives_a_trip_through_kafka_headers() -> None:
    """A span's context injected into headers is extracted with the same trace id downstream."""
    tracing.setup("test")
    with tracing.tracer("t").start_as_current_span("ingest") as span:
        headers: list[tuple[str, bytes]] = []
        tracing.inject(headers)
    assert [k for k, _ in headers] == ["traceparent"]
    extracted = trace.get_current_span(tracing.extract(headers)).get_span_context()
    assert extracted.trace_id == span.get_span_context().trace_id
