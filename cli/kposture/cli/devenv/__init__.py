"""The local environment of DESIGN.md section 5: a real Kafka broker and real apiservers.

Everything is provisioned from package registries (Maven Central for Kafka, the Go module proxy
for Kubernetes), cached under ``$KPOSTURE_HOME`` and started on 127.0.0.1.
"""
