"""Activation: destinations, the outbox per destination, delivery with retries, dead letters and replay."""
