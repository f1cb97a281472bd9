"""Generation of the JSON Schemas in ``schemas/json/``, the public contract for consumers.

``python -m kposture.schemas.jsonschemas DIR`` writes them; a test regenerates them in memory
and fails when the committed files differ, so the contract never drifts silently.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from kposture.schemas import audit, deadletter, findings, policy, posture, remediation, resources

MODELS: dict[str, type[Any]] = {
    "resource-event": resources.ResourceEvent,
    "finding": findings.Finding,
    "posture-snapshot": posture.PostureSnapshot,
    "posture-contribution": posture.Contribution,
    "remediation-action": remediation.RemediationAction,
    "audit-event": audit.AuditEvent,
    "dead-letter": deadletter.DeadLetter,
    "policy-document": policy.PolicyDocument,
}


def generate() -> dict[str, bytes]:
    """Every schema file's name and its exact bytes (sorted keys, two-space indent)."""
    out: dict[str, bytes] = {}
    for stem, model in MODELS.items():
        schema = msgspec.json.schema(model)
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://kposture.io/schemas/{stem}.v1.json"
        text = msgspec.json.format(msgspec.json.encode(_sort(schema)), indent=2)
        out[f"{stem}.v1.json"] = text + b"\n"
    return out


def _sort(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sort(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sort(v) for v in value]
    return value


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, data in generate().items():
        path = directory / filename
        path.write_bytes(data)
        written.append(path)
    return written


if __name__ == "__main__":
    for _path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas/json")):
        pass
