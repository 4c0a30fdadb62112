"""Deployment artefacts: the Kubernetes overlays, compose.yaml, the Dockerfile and its build steps.

There is no Docker engine or cluster here, so the manifests are rendered with kustomize and
validated strictly against the Kubernetes schemas, the compose file against the Compose
specification, the Dockerfile with hadolint, and the Dockerfile's builder stage is replayed
outside Docker (tests/deploy_replay.py) into a clean virtualenv whose entrypoints are then run.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from services.policy.config import Settings as PolicySettings
from services.usage.config import Settings as UsageSettings
from tests import deploy_replay

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OVERLAYS = ["dev", "production"]
K8S_VERSION = "1.37.0"
SERVICES = {
    "usage": {"port": 50051, "metrics": 9464, "health": "tollgate.usage.v1.UsageService", "prefix": "USAGE_"},
    "policy": {"port": 50052, "metrics": 9465, "health": "tollgate.policy.v1.PolicyService", "prefix": "POLICY_"},
}
PLACEHOLDER = "REPLACE_ME"


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    """Every object `kubectl kustomize` renders for an overlay."""
    out = subprocess.run([str(BIN / "kubectl"), "kustomize", str(ROOT / "docker/k8s/overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects(overlay: str, kind: str) -> list[dict]:
    return [obj for obj in rendered(overlay) if obj["kind"] == kind]


def pod_specs(overlay: str) -> list[tuple[str, dict]]:
    """(name, pod spec) of every Deployment and Job."""
    return [(f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
            for obj in rendered(overlay) if obj["kind"] in ("Deployment", "Job")]


def deployment(overlay: str, name: str) -> dict:
    (found,) = [obj for obj in objects(overlay, "Deployment") if obj["metadata"]["name"] == name]
    return found


def config_data(overlay: str) -> dict[str, str]:
    (config,) = objects(overlay, "ConfigMap")
    return config["data"]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def rules_for_port(overlay: str, pod_labels: dict, port: int) -> list[dict]:
    """Every ingress rule of every NetworkPolicy selecting these pods that opens `port`."""
    rules = []
    for policy in objects(overlay, "NetworkPolicy"):
        if not selects(policy["spec"]["podSelector"], pod_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is None or any(p.get("port") == port for p in ports):
                rules.append(rule)
    return rules


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def server_labels(name: str) -> dict:
    return deployment("dev", name)["spec"]["template"]["metadata"]["labels"]


# Kubernetes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_against_the_kubernetes_schema_strictly(overlay):
    for obj in rendered(overlay):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_strict_schema_check_rejects_an_unknown_field():
    broken = {**deployment("dev", "usage"), "spec": {**deployment("dev", "usage")["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_everything_an_operator_needs(overlay):
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered(overlay)}
    for service in SERVICES:
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                     "ServiceAccount"):
            assert (kind, service) in names
        assert ("Job", f"{service}-migrate") in names
    assert ("Secret", "tollgate-secrets") in names
    assert len(objects(overlay, "ConfigMap")) == 1
    assert all(obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tollgate" for obj in rendered(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_probes_grpc_health_for_liveness_readiness_and_startup(overlay):
    for name, spec in SERVICES.items():
        (container,) = deployment(overlay, name)["spec"]["template"]["spec"]["containers"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == spec["port"], (name, probe)
            assert set(container[probe]) & {"httpGet", "tcpSocket", "exec"} == set(), (name, probe)
        assert container["readinessProbe"]["grpc"]["service"] == spec["health"]
        # A database outage must take pods out of rotation, not restart them.
        assert container["livenessProbe"]["grpc"]["service"] == "liveness"
        assert container["startupProbe"]["grpc"]["service"] == "liveness"
        assert {p["containerPort"] for p in container["ports"]} == {spec["port"], spec["metrics"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_non_root_read_only_without_capabilities_under_runtime_default_seccomp(overlay):
    for name, spec in pod_specs(overlay):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] > 0, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"], name
            assert context["seccompProfile"]["type"] == "RuntimeDefault", name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_sets_cpu_and_memory_requests_and_limits(overlay):
    for name, spec in pod_specs(overlay):
        for container in spec["containers"]:
            for part in ("requests", "limits"):
                assert set(container["resources"][part]) == {"cpu", "memory"}, (name, part)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_the_drain_plus_grace_seconds_of_the_configmap(overlay):
    data = config_data(overlay)
    for name, spec in SERVICES.items():
        pod = deployment(overlay, name)["spec"]["template"]["spec"]
        budget = float(data[f"{spec['prefix']}DRAIN_SECONDS"]) + float(data[f"{spec['prefix']}GRACE_SECONDS"])
        # One more second: the server notices the signal on a one-second tick.
        assert pod["terminationGracePeriodSeconds"] > budget + 1, name
        assert "preStop" not in pod["containers"][0].get("lifecycle", {}), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_usage_grpc_port_admits_only_policy_pods_and_the_ingress_controller(overlay):
    peers = [peer for rule in rules_for_port(overlay, server_labels("usage"), 50051) for peer in rule.get("from", [None])]
    policy_pods = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "policy",
                                                   "app.kubernetes.io/component": "server"}}}
    ingress_controller = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
                          "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}}}
    assert sorted(map(canonical, peers)) == sorted(map(canonical, [policy_pods, ingress_controller]))
    assert selects(policy_pods["podSelector"], server_labels("policy"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_grpc_port_admits_the_ingress_and_labelled_client_namespaces_only(overlay):
    peers = [peer for rule in rules_for_port(overlay, server_labels("policy"), 50052) for peer in rule.get("from", [None])]
    selectors = sorted(str(p["namespaceSelector"]["matchLabels"]) for p in peers)
    assert selectors == sorted([str({"kubernetes.io/metadata.name": "ingress-nginx"}), str({"tollgate/client": "true"})])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_ports_admit_only_the_monitoring_namespace(overlay):
    for name, spec in SERVICES.items():
        peers = [p for rule in rules_for_port(overlay, server_labels(name), spec["metrics"]) for p in rule.get("from", [None])]
        assert peers == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_other_pod_in_the_namespace_is_closed_to_ingress_by_default(overlay):
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")
               for p in objects(overlay, "NetworkPolicy"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_hold_only_placeholders(overlay):
    for secret in objects(overlay, "Secret"):
        values = {**secret.get("stringData", {}), **secret.get("data", {})}
        assert values
        assert all(PLACEHOLDER in value for value in values.values()), values


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_key_a_pod_reads_exists_in_the_secret(overlay):
    (secret,) = objects(overlay, "Secret")
    keys = set(secret["stringData"])
    for name, spec in pod_specs(overlay):
        for container in spec["containers"]:
            for env in container.get("env", []):
                assert env["valueFrom"]["secretKeyRef"]["key"] in keys, (name, env)
        for volume in spec.get("volumes", []):
            for item in volume.get("secret", {}).get("items", []):
                assert item["key"] in keys, (name, item)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_is_a_valid_configuration_of_both_services(overlay, tmp_path):
    data = dict(config_data(overlay))
    token_file = tmp_path / "token"
    token_file.write_text("t")
    data["POLICY_USAGE_TOKEN_FILE"] = str(token_file)
    known = env_variables("usage") | env_variables("policy")
    assert set(data) <= known, set(data) - known
    usage, policy = UsageSettings.from_env(data), PolicySettings.from_env(data)
    assert (usage.port, usage.metrics_port) == (50051, 9464)
    assert (policy.port, policy.metrics_port, policy.usage_addr) == (50052, 9465, "usage:50051")


def test_the_policy_token_file_is_mounted_where_the_configmap_points():
    data = config_data("production")
    (container,) = deployment("production", "policy")["spec"]["template"]["spec"]["containers"]
    mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "usage-token"]
    assert Path(data["POLICY_USAGE_TOKEN_FILE"]).parent == Path(mounts[0])


def test_production_points_the_migrations_past_pgbouncer_and_sizes_small_pools():
    data = config_data("production")
    assert int(data["USAGE_DB_POOL_SIZE"]) <= 4 and int(data["POLICY_DB_POOL_SIZE"]) <= 4
    for name, spec in pod_specs("production"):
        keys = [e["valueFrom"]["secretKeyRef"]["key"] for c in spec["containers"] for e in c.get("env", [])]
        assert all(("migration" in key) == name.startswith("Job/") for key in keys), (name, keys)


def env_variables(service: str) -> set[str]:
    """Every variable a service's config.py reads (POLICY_USAGE_TOKEN also as ..._FILE)."""
    source = (ROOT / "services" / service / "config.py").read_text()
    names = set(re.findall(rf'"({service.upper()}_[A-Z_]+)"', source))
    return names | {f"{name}_FILE" for name in names if name.endswith("_TOKEN")}


# Compose ------------------------------------------------------------------------------------------

def check_compose(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker/compose.yaml").read_text())


def test_compose_file_is_valid_against_the_compose_specification():
    result = check_compose(ROOT / "docker/compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_schema_check_rejects_an_unknown_key(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text((ROOT / "docker/compose.yaml").read_text().replace("healthcheck:", "helthcheck:", 1))
    assert check_compose(broken).returncode != 0


def test_compose_migrates_each_schema_once_before_its_service_starts():
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.startswith("pgdata:") for v in postgres["volumes"]) and "pgdata" in compose()["volumes"]
    for name in SERVICES:
        migrate = services[f"{name}-migrate"]
        assert migrate["command"] == ["alembic", "-c", "migrations/alembic.ini", "-n", name, "upgrade", "head"]
        assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert migrate["restart"] == "no"
        condition = services[name]["depends_on"][f"{name}-migrate"]["condition"]
        assert condition == "service_completed_successfully"
        probe = services[name]["healthcheck"]["test"]
        assert probe == ["CMD", "python", "/app/grpc_health_probe.py", f"localhost:{SERVICES[name]['port']}",
                         SERVICES[name]["health"]]
    assert services["policy"]["environment"]["POLICY_USAGE_ADDR"] == "usage:50051"


def test_compose_and_the_kubernetes_jobs_run_the_same_migration_command():
    services = compose()["services"]
    for overlay in OVERLAYS:
        for job in objects(overlay, "Job"):
            service = job["metadata"]["name"].removesuffix("-migrate")
            assert job["spec"]["template"]["spec"]["containers"][0]["command"] == services[f"{service}-migrate"]["command"]


# Dockerfile ---------------------------------------------------------------------------------------

def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hadolint"), "--no-color", str(path)], capture_output=True, text=True)


def test_hadolint_passes_on_the_dockerfile():
    result = hadolint(ROOT / "docker/Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_an_unpinned_base_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install grpcio\n")
    assert hadolint(bad).returncode != 0


def test_the_final_stage_is_slim_non_root_and_without_healthcheck_or_compilers():
    stages = deploy_replay.parse(ROOT / "docker/Dockerfile")
    final = stages[-1]
    assert final.base.startswith("python:3.11-slim")
    assert stages[0].base.removeprefix("python:").split("-")[0] == final.base.removeprefix("python:").split("-")[0]
    user = [arg for op, arg in final.steps if op == "USER"]
    assert user and user[-1].split(":")[0].isdigit() and int(user[-1].split(":")[0]) > 0
    assert all(op != "HEALTHCHECK" for stage in stages for op, _ in stage.steps)
    runs = " ".join(arg for op, arg in final.steps if op == "RUN")
    assert not re.search(r"apt-get|gcc|build-essential|pip install", runs)
    copies = [arg for op, arg in final.steps if op == "COPY"]
    assert [c for c in copies if c.startswith("--from")] == ["--from=builder /opt/venv /opt/venv"]


def test_the_dockerignore_admits_every_path_the_dockerfile_copies():
    allowed = {line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    for stage in deploy_replay.parse(ROOT / "docker/Dockerfile"):
        for op, arg in stage.steps:
            if op == "COPY" and not arg.startswith("--from"):
                for source in arg.split()[:-1]:
                    assert source.rstrip("/") in allowed, source


def test_replaying_a_failing_build_step_raises(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11 AS builder\nWORKDIR /src\nRUN exit 3\nFROM python:3.11-slim\n")
    with pytest.raises(deploy_replay.ReplayError, match="exit 3"):
        deploy_replay.replay(dockerfile, context=ROOT, root=tmp_path / "image")


# The image's build steps, replayed outside Docker --------------------------------------------------

@pytest.fixture(scope="module")
def image(tmp_path_factory) -> deploy_replay.Image:
    """The Dockerfile replayed into a temporary root: a clean venv built by the image's own steps."""
    return deploy_replay.replay(ROOT / "docker/Dockerfile", context=ROOT, root=tmp_path_factory.mktemp("image"))


@pytest.mark.slow
def test_the_image_migrations_bring_both_schemas_to_head(image, tmp_path):
    from shared import migrate
    from shared.db import create_engine_for

    for name in SERVICES:
        url = f"sqlite:///{tmp_path}/{name}.db"
        command = compose()["services"][f"{name}-migrate"]["command"]
        result = image.run(command, env={f"{name.upper()}_DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
        engine = create_engine_for(url, schema=name)
        assert migrate.current_revision(engine, name) == migrate.head_revision(name)
        engine.dispose()


@pytest.mark.slow
def test_the_image_entrypoints_serve_health_and_stop_cleanly_on_sigterm(image, tmp_path):
    services = compose()["services"]
    ports = {name: deploy_replay.free_port() for name in SERVICES}
    env = {}
    for name in SERVICES:
        prefix = name.upper()
        url = f"sqlite:///{tmp_path}/{name}.db"
        assert image.run(services[f"{name}-migrate"]["command"], env={f"{prefix}_DATABASE_URL": url}).returncode == 0
        env.update({f"{prefix}_DATABASE_URL": url, f"{prefix}_HOST": "127.0.0.1", f"{prefix}_PORT": str(ports[name]),
                    f"{prefix}_METRICS_PORT": "-1", f"{prefix}_HEALTH_INTERVAL_SECONDS": "0.2"})
    env["POLICY_USAGE_ADDR"] = f"127.0.0.1:{ports['usage']}"
    processes = {name: image.start(services[name]["command"], env=env) for name in SERVICES}
    try:
        for name, spec in SERVICES.items():
            probe = [part.replace(f"localhost:{spec['port']}", f"127.0.0.1:{ports[name]}")
                     for part in services[name]["healthcheck"]["test"][1:]]
            assert deploy_replay.wait_until(lambda: image.run(probe).returncode == 0, seconds=30), \
                processes[name].stderr_text()
            assert deploy_replay.health_status(ports[name], spec["health"]) == "SERVING"
        for name, process in processes.items():
            assert process.terminate_and_wait(timeout=20) == 0, process.stderr_text()
    finally:
        for process in processes.values():
            process.kill()


# Docs and the database roles they prescribe -------------------------------------------------------

def test_the_operations_guide_documents_every_variable_the_services_read():
    guide = (ROOT / "docs/operations.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", guide, flags=re.MULTILINE))
    assert env_variables("usage") | env_variables("policy") | {"TOLLGATE_MIGRATIONS_DIR"} <= documented


def test_the_example_alerts_watch_errors_latency_targets_rollup_lag_and_usage_fallbacks():
    config = yaml.safe_load((ROOT / "docs/monitoring/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    rules = [rule for group in yaml.safe_load((ROOT / "docs/monitoring/alerts.yml").read_text())["groups"]
             for rule in group["rules"]]
    exprs = " ".join(rule["expr"] for rule in rules)
    for needle in ("grpc_code", "grpc_server_handling_seconds_bucket", "up{", "tollgate_rollup_dirty_buckets",
                   "tollgate_rollup_oldest_dirty_seconds", "tollgate_policy_usage_fallbacks_total"):
        assert needle in exprs, needle
    assert all(rule["alert"] and rule["annotations"]["summary"] for rule in rules)


def psql(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", "-d", url, *args],
                          capture_output=True, text=True)


@pytest.mark.postgres
def test_the_role_script_lets_each_service_migrate_and_restore_its_own_schema_and_not_read_the_other(
        postgres_url, tmp_path):
    from scripts.pgcluster import create_postgres_database, drop_postgres_database
    from tests import support

    admin = support.postgres_admin_url()
    url = create_postgres_database(admin).replace("+psycopg", "")
    suffix = url.rpartition("_")[2]
    roles = {"usage": f"tg_usage_{suffix}", "policy": f"tg_policy_{suffix}"}
    try:
        made = psql(url, "-v", f"usage_role={roles['usage']}", "-v", "usage_password=pw-u", "-v",
                    f"policy_role={roles['policy']}", "-v", "policy_password=pw-p", "-f", str(ROOT / "docker/postgres/roles.sql"))
        assert made.returncode == 0, made.stderr
        passwords = {"usage": "pw-u", "policy": "pw-p"}
        as_role = {name: make_url(url).set(username=role, password=passwords[name]).render_as_string(hide_password=False)
                   for name, role in roles.items()}
        for name in SERVICES:
            command = compose()["services"][f"{name}-migrate"]["command"]
            result = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True,
                                    env={**_clean_env(), f"{name.upper()}_DATABASE_URL": as_role[name]})
            assert result.returncode == 0, result.stderr
        denied = psql(as_role["usage"], "-c", "SELECT * FROM policy.alembic_version")
        assert "permission denied for schema policy" in denied.stderr
        dump = tmp_path / "usage.dump"
        assert subprocess.run(["pg_dump", "--format=custom", "--schema=usage", f"--file={dump}", url]).returncode == 0
        assert psql(url, "-c", "DROP SCHEMA usage CASCADE").returncode == 0
        restored = subprocess.run(["pg_restore", f"--dbname={url}", "--exit-on-error", str(dump)],
                                  capture_output=True, text=True)
        assert restored.returncode == 0, restored.stderr
        owner = psql(url, "-At", "-c", "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'usage'")
        version = psql(as_role["usage"], "-At", "-c", "SELECT count(*) FROM usage.alembic_version")
        assert (owner.stdout.strip(), version.stdout.strip()) == (roles["usage"], "1")
    finally:
        drop_postgres_database(admin, url)
        for role in roles.values():
            psql(admin.replace("+psycopg", ""), "-c", f'DROP ROLE IF EXISTS "{role}"')


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("USAGE_", "POLICY_"))}
