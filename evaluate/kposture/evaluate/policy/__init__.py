"""Policy: baselines and exceptions as code, from YAML documents to resolved, validated rules.

Reads and validates baseline and exception documents (with the line of every field, for
messages), resolves a baseline at a version, stores the active policy set, and compiles CEL.
Pure: no I/O library; the stream processor and the scanner consume what it builds.
"""
