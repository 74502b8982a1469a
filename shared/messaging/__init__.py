"""Kafka: the topic catalogue, the producer, the transactional outbox, the stages' faust app, and the
contracts (JSON Schema and AsyncAPI) generated from the wire models."""
