"""Use cases of the Usage service, one module per use case; each owns exactly one transaction."""
