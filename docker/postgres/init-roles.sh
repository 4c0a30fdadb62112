#!/bin/sh
# Compose only: the postgres image runs this once, when it initialises an empty volume.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v usage_role=tollgate_usage -v usage_password="$USAGE_DB_PASSWORD" \
  -v policy_role=tollgate_policy -v policy_password="$POLICY_DB_PASSWORD" \
  -f /tollgate/roles.sql
