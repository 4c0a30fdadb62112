"""compose.yaml against the Compose specification, the Dockerfile with hadolint, and the image's
build steps replayed outside Docker (tests/deploy_replay.py) into a clean virtualenv whose
entrypoints are then run. There is no Docker engine here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests import deploy_replay, support
from tests.deploy_support import BIN, ROOT, SERVICES, check_compose, compose


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
        assert probe == [
            "CMD",
            "python",
            "/app/grpc_health_probe.py",
            f"localhost:{SERVICES[name]['port']}",
            SERVICES[name]["health"],
        ]
    assert services["policy"]["environment"]["POLICY_USAGE_ADDR"] == "usage:50051"


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
def test_the_installed_distribution_puts_one_import_name_on_the_path_with_the_stubs_inside(image):
    """`pip install .` adds `tollgate` (and its console script), never generic names such as `shared` or `bench`."""
    listing = "import importlib.metadata as m; print('\\n'.join(str(f) for f in m.files('tollgate')))"
    result = image.run(["python", "-c", listing])
    assert result.returncode == 0, result.stderr
    files = result.stdout.split()
    top_level = {path.split("/")[0] for path in files if not path.startswith("..")}
    assert top_level == {"tollgate", "tollgate-0.1.0.dist-info"}
    assert {"tollgate/usage/v1/usage_pb2.py", "tollgate/policy/v1/policy_pb2_grpc.py"} <= set(files)
    assert not any(path.endswith("tollgate/__init__.py") for path in files)  # a namespace shared with the client


@pytest.mark.slow
def test_the_image_migrations_bring_both_schemas_to_head(image, tmp_path):
    from tollgate.shared import migrate
    from tollgate.shared.db import create_engine_for

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
        env.update(
            {
                f"{prefix}_DATABASE_URL": url,
                f"{prefix}_HOST": "127.0.0.1",
                f"{prefix}_PORT": str(ports[name]),
                f"{prefix}_METRICS_PORT": "-1",
                f"{prefix}_HTTP_PORT": "-1",
                f"{prefix}_HEALTH_INTERVAL_SECONDS": "0.2",
            }
        )
    env["POLICY_USAGE_ADDR"] = f"127.0.0.1:{ports['usage']}"
    processes = {name: image.start(services[name]["command"], env=env) for name in SERVICES}
    try:
        for name, spec in SERVICES.items():
            probe = [
                part.replace(f"localhost:{spec['port']}", f"127.0.0.1:{ports[name]}")
                for part in services[name]["healthcheck"]["test"][1:]
            ]
            assert support.wait_until(lambda probe=probe: image.run(probe).returncode == 0, seconds=30, every=0.3), (
                processes[name].stderr_text()
            )
            assert deploy_replay.health_status(ports[name], spec["health"]) == "SERVING"
        for process in processes.values():
            assert process.terminate_and_wait(timeout=20) == 0, process.stderr_text()
    finally:
        for process in processes.values():
            process.kill()
