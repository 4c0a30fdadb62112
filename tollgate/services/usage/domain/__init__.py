"""Usage's domain: frozen values, pure rules (admission, dedup, buckets, horizons, read plans) and the catalog;
it imports neither grpc nor SQLAlchemy."""
