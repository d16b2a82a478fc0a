"""Profiles: golden records with survivorship and lineage, and computed traits, over the identity graph."""
