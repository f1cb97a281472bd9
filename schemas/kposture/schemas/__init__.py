"""Wire contracts of kposture: every record on every topic, and the topic catalogue.

This package is the public contract for dashboards, alert routing and SIEMs. It imports nothing
else of ours and no I/O library: models are frozen msgspec structs, encoded as JSON, wrapped in
CloudEvents 1.0 (binary mode) for Kafka. The JSON Schemas generated from these models live in
``schemas/json/`` and a test keeps them in step with the code.
"""
