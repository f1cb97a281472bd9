"""OpenTelemetry tracing with the W3C trace context carried in Kafka headers.

A span started where an object change is observed continues through evaluate and remediate,
because every record carries ``traceparent`` (and ``tracestate``) headers. Spans stay in the
process unless an exporter is configured; the console exporter is for debugging.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = ("traceparent", "tracestate")


def setup(service: str, *, console: bool = False) -> TracerProvider:
    """Install a tracer provider for ``service`` (once per process)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if console:
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def tracer(name: str) -> trace.Tracer:
    """A tracer for one module."""
    return trace.get_tracer(name)


def inject(headers: list[tuple[str, bytes]]) -> None:
    """Append the current trace context to Kafka ``headers`` (nothing if no span is active)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    headers.extend((k, v.encode()) for k, v in carrier.items() if k in _TRACE_HEADERS)


def extract(headers: Sequence[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context carried by Kafka ``headers`` (an empty context if none)."""
    carrier: dict[str, Any] = {}
    for key, value in headers or ():
        if key in _TRACE_HEADERS:
            try:
                carrier[key] = value.decode()
            except UnicodeDecodeError:
                continue
    return _PROPAGATOR.extract(carrier)
