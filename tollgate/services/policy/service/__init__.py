"""Policy use cases; each owns one transaction. Split by use case: catalog, tenants, resolve, audit."""
