"""Privacy-preserving person tokenization (OpenToken-compatible, hash-only mode)."""
