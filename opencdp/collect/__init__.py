"""Collect: Segment-spec messages in, durable journal lines out (authentication, limits, validation)."""
