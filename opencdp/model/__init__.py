"""Plain data models shared by every stage (no I/O)."""
