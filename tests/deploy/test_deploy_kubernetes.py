"""Kubernetes manifests: the kustomize overlays rendered and validated strictly against the
Kubernetes schemas, and the rules an operator relies on (gRPC probes, non-root read-only pods,
NetworkPolicy, secrets, the ConfigMap). There is no cluster here; kustomize and the schemas are.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy_support import BIN, K8S_VERSION, OVERLAYS, PLACEHOLDER, ROOT, SERVICES, compose, env_variables
from tollgate.services.policy.config import Settings as PolicySettings
from tollgate.services.usage.config import Settings as UsageSettings


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    """Every object `kubectl kustomize` renders for an overlay."""
    out = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(ROOT / "docker/k8s/overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects(overlay: str, kind: str) -> list[dict]:
    return [obj for obj in rendered(overlay) if obj["kind"] == kind]


def pod_specs(overlay: str) -> list[tuple[str, dict]]:
    """(name, pod spec) of every Deployment and Job."""
    return [
        (f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
        for obj in rendered(overlay)
        if obj["kind"] in ("Deployment", "Job")
    ]


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
        for kind in (
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "ServiceAccount",
        ):
            assert (kind, service) in names
        assert ("Job", f"{service}-migrate") in names
    assert ("Secret", "tollgate-secrets") in names
    assert len(objects(overlay, "ConfigMap")) == 1
    assert all(obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tollgate" for obj in rendered(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_probes_grpc_health_for_liveness_readiness_and_startup(overlay):
    data = config_data(overlay)
    for name, spec in SERVICES.items():
        (container,) = deployment(overlay, name)["spec"]["template"]["spec"]["containers"]
        # On the plaintext health-only port, which the kubelet can reach whether or not the gRPC port is TLS.
        assert int(data[f"{spec['prefix']}HEALTH_PORT"]) == spec["health_port"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert container[probe]["grpc"]["port"] == spec["health_port"], (name, probe)
            assert set(container[probe]) & {"httpGet", "tcpSocket", "exec"} == set(), (name, probe)
        assert container["readinessProbe"]["grpc"]["service"] == spec["health"]
        # A database outage must take pods out of rotation, not restart them.
        assert container["livenessProbe"]["grpc"]["service"] == "liveness"
        assert container["startupProbe"]["grpc"]["service"] == "liveness"
        assert {p["containerPort"] for p in container["ports"]} == {
            spec["port"],
            spec["http"],
            spec["metrics"],
            spec["health_port"],
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_exposes_its_http_port_open_to_exactly_the_peers_of_its_grpc_port(overlay):
    for name, spec in SERVICES.items():
        (service,) = [s for s in objects(overlay, "Service") if s["metadata"]["name"] == name]
        # Production serves it with the gRPC port's certificate: HTTPS.
        scheme = "https" if overlay == "production" else "http"
        assert {"name": "http", "port": spec["http"], "targetPort": "http", "appProtocol": scheme} in service["spec"][
            "ports"
        ]
        peers = {
            port: sorted(
                canonical(p)
                for rule in rules_for_port(overlay, server_labels(name), port)
                for p in rule.get("from", [])
            )
            for port in (spec["port"], spec["http"])
        }
        assert peers[spec["http"]] == peers[spec["port"]] != [], name


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
    peers = [
        peer for rule in rules_for_port(overlay, server_labels("usage"), 50051) for peer in rule.get("from", [None])
    ]
    policy_pods = {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "policy", "app.kubernetes.io/component": "server"}}
    }
    ingress_controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    }
    assert sorted(map(canonical, peers)) == sorted(map(canonical, [policy_pods, ingress_controller]))
    assert selects(policy_pods["podSelector"], server_labels("policy"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_grpc_port_admits_the_ingress_and_labelled_client_namespaces_only(overlay):
    peers = [
        peer for rule in rules_for_port(overlay, server_labels("policy"), 50052) for peer in rule.get("from", [None])
    ]
    selectors = sorted(str(p["namespaceSelector"]["matchLabels"]) for p in peers)
    assert selectors == sorted(
        [str({"kubernetes.io/metadata.name": "ingress-nginx"}), str({"tollgate/client": "true"})]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_metrics_ports_admit_only_the_monitoring_namespace(overlay):
    for name, spec in SERVICES.items():
        peers = [
            p
            for rule in rules_for_port(overlay, server_labels(name), spec["metrics"])
            for p in rule.get("from", [None])
        ]
        assert peers == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_other_pod_in_the_namespace_is_closed_to_ingress_by_default(overlay):
    assert any(
        p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")
        for p in objects(overlay, "NetworkPolicy")
    )


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
            if volume.get("secret", {}).get("secretName") != secret["metadata"]["name"]:
                continue  # the TLS Secrets come from the certificate issuer, not from these manifests
            for item in volume["secret"].get("items", []):
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


def mounted_files(name: str) -> dict[str, tuple[str, set[str] | None]]:
    """Mount path -> (Secret, the keys it projects, None for all) of a production Deployment's Secret volumes."""
    pod = deployment("production", name)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    return {
        m["mountPath"]: (
            volumes[m["name"]]["secretName"],
            {i["path"] for i in volumes[m["name"]]["items"]} if "items" in volumes[m["name"]] else None,
        )
        for m in container["volumeMounts"]
        if m["name"] in volumes
    }


def test_production_serves_both_grpc_ports_with_tls_from_each_services_own_secret():
    data = config_data("production")
    for name, spec in SERVICES.items():
        mounts = mounted_files(name)
        for variable in ("TLS_CERT_FILE", "TLS_KEY_FILE"):
            path = Path(data[f"{spec['prefix']}{variable}"])
            assert mounts[str(path.parent)] == (f"{name}-tls", None), (name, variable)
            assert path.name in ("tls.crt", "tls.key")
    # Policy trusts Usage's CA, and is given nothing else of Usage's Secret (never its key).
    ca = Path(data["POLICY_USAGE_TLS_CA_FILE"])
    assert mounted_files("policy")[str(ca.parent)] == ("usage-tls", {"ca.crt"}) and ca.name == "ca.crt"
    assert not any(key.startswith(("USAGE_TLS", "POLICY_TLS")) for key in config_data("dev"))
    for service in objects("production", "Service"):
        (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert "appProtocol" not in grpc_port, service["metadata"]["name"]  # not h2c: the port is TLS


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


def test_compose_and_the_kubernetes_jobs_run_the_same_migration_command():
    services = compose()["services"]
    for overlay in OVERLAYS:
        for job in objects(overlay, "Job"):
            service = job["metadata"]["name"].removesuffix("-migrate")
            assert (
                job["spec"]["template"]["spec"]["containers"][0]["command"] == services[f"{service}-migrate"]["command"]
            )
