"""Policy's domain: frozen values, pure rules and named errors; it imports neither grpc nor SQLAlchemy."""
