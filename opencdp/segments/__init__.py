"""Segments: audiences defined without SQL, compiled to set-based SQL, evaluated in real time and in batch."""
