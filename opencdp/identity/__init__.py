"""Identity: one incremental identity graph over the governed stream (identifiers, edges, profiles)."""
