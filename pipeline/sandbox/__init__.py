"""The embedded development environment: a Kafka-protocol broker and a Kubernetes API emulator.

Used by the CLI and the tests, never by a stage: stages only see Kafka and Kubernetes URLs.
"""
