"""Segment-compatible HTTP ingest and the group committer that acknowledges after durable append."""
