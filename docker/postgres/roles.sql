-- One database role per service, each owning its own schema and nothing else.
-- Run once per database as a superuser (or the database owner), before the first migration:
--   psql -v ON_ERROR_STOP=1 -v usage_role=tollgate_usage -v usage_password=... \
--        -v policy_role=tollgate_policy -v policy_password=... -f docker/postgres/roles.sql DBNAME
-- The migrations then run as the service's own role (they only create the schema when missing).
CREATE ROLE :"usage_role" LOGIN PASSWORD :'usage_password';
CREATE ROLE :"policy_role" LOGIN PASSWORD :'policy_password';
CREATE SCHEMA usage AUTHORIZATION :"usage_role";
CREATE SCHEMA policy AUTHORIZATION :"policy_role";
ALTER ROLE :"usage_role" SET search_path = usage;
ALTER ROLE :"policy_role" SET search_path = policy;
-- Usage's statements are large and cheap to run: plan them once, and never JIT-compile them (JIT
-- compiles again at every execution). The service also sets both on each connection it opens, which
-- PgBouncer's transaction pooling would not keep.
ALTER ROLE :"usage_role" SET plan_cache_mode = force_generic_plan;
ALTER ROLE :"usage_role" SET jit = off;
-- Policy's too, and every one of its statements is served by an index: a plan made while reservations and the
-- outbox were small would otherwise keep scanning them whole after they grew.
ALTER ROLE :"policy_role" SET plan_cache_mode = force_generic_plan;
ALTER ROLE :"policy_role" SET jit = off;
ALTER ROLE :"policy_role" SET enable_seqscan = off;
-- Nobody else connects or creates objects in the public schema.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), :'usage_role', :'policy_role') \gexec
-- Usage stages each ingest batch (COPY) and each rollup pass in temp tables that live for one
-- transaction: it needs TEMPORARY, which the REVOKE above took from PUBLIC.
SELECT format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), :'usage_role') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
