"""Governance: the first stage over the raw log (tracking plans, violations, quarantine)."""
