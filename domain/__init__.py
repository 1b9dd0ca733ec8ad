"""The write model: Segment calls, identity rules and event-sourced aggregates. Imports no drivers."""
