"""The relay (event log → Kafka) and the processors that build projections from log messages."""
