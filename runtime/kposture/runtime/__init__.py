"""Plumbing shared by the services: settings, Kafka and Kubernetes clients, telemetry, health.

Nothing here knows what a finding or a baseline means; the services own that. This layer may
import ``kposture.schemas`` and I/O libraries, and nothing else of ours.
"""
