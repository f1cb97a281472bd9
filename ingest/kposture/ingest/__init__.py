"""Ingest: watch every configured cluster and publish each change to ``kposture.resources.v1``.

``normalising`` (pure) strips what must never leave a cluster and computes the digest that
suppresses status-only updates; ``watching`` lists and watches each (cluster, kind);
``publishing`` moves events through a bounded buffer to Kafka; ``service`` wires them with the
health server; ``inventory`` reads the compacted topic back as the fleet's current inventory.
"""
