"""The tollgate-client wheel: built from the checkout by `make client-wheel`'s script, installed into a fresh
virtualenv that has never seen the server, and used there against a real Usage server."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests import support

ROOT = Path(__file__).resolve().parents[2]
CLIENT_PROJECT = ROOT / "clients" / "python"
SERVER_STACK = ("sqlalchemy", "psycopg", "psycopg_pool", "alembic")
CLIENT_DEPENDENCIES = {"grpcio", "protobuf"}
# What the client's own sources may import besides the standard library.
ALLOWED_IMPORTS = ("grpc", "google.protobuf", "tollgate.clients", "tollgate.usage", "tollgate.policy", "tollgate.audit")


def pins(pyproject: Path) -> dict[str, str]:
    """{distribution name: requirement} of a pyproject's run-time dependencies, names lowercased."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {requirement.split("==")[0].split("[")[0].strip().lower(): requirement for requirement in dependencies}


def imported_modules(source: Path) -> set[str]:
    """Every module a Python file imports, absolute names."""
    tree = ast.parse(source.read_text(), filename=str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_client_pins_grpcio_and_protobuf_exactly_as_the_server_distribution_does():
    client, server = pins(CLIENT_PROJECT / "pyproject.toml"), pins(ROOT / "pyproject.toml")
    assert set(client) == CLIENT_DEPENDENCIES
    assert all("==" in requirement for requirement in client.values())
    assert {name: server[name] for name in CLIENT_DEPENDENCIES} == client


def test_the_recorder_imports_only_the_standard_library_grpc_protobuf_and_the_stubs():
    sources = sorted((ROOT / "tollgate" / "clients").rglob("*.py"))
    assert sources
    foreign = {
        f"{source.relative_to(ROOT)}: {module}"
        for source in sources
        for module in imported_modules(source)
        if module.split(".")[0] not in sys.stdlib_module_names
        and module != "__future__"
        and not any(module == allowed or module.startswith(f"{allowed}.") for allowed in ALLOWED_IMPORTS)
    }
    assert not foreign


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_wheel", CLIENT_PROJECT / "build_wheel.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_checkout(root: Path, *, stubs: tuple[str, ...]) -> Path:
    """A checkout with proto/ and the generated stubs of `stubs`, generated after the contracts."""
    for name in ("usage", "policy", "audit"):
        contract = root / "proto" / "tollgate" / name / "v1" / f"{name}.proto"
        contract.parent.mkdir(parents=True)
        contract.write_text('syntax = "proto3";\n')
        os.utime(contract, (1_000, 1_000))
    for name in stubs:
        (root / "tollgate" / name / "v1").mkdir(parents=True)
        (root / "tollgate" / name / "v1" / "__init__.py").touch()
    (root / "tollgate" / ".generated").touch()
    return root


def test_the_build_refuses_stubs_missing_or_older_than_the_contracts_and_names_them(tmp_path):
    build_wheel = load_build_script()
    build_wheel.check_stubs(fake_checkout(tmp_path / "fresh", stubs=("usage", "policy", "audit")))
    with pytest.raises(build_wheel.StaleStubs, match=r"no generated stubs for policy, audit: run `make proto`"):
        build_wheel.check_stubs(fake_checkout(tmp_path / "partial", stubs=("usage",)))
    stale = fake_checkout(tmp_path / "stale", stubs=("usage", "policy", "audit"))
    os.utime(stale / "tollgate" / ".generated", (500, 500))
    with pytest.raises(build_wheel.StaleStubs, match=r"^proto/tollgate/audit/v1/audit.proto, .*usage.proto changed"):
        build_wheel.check_stubs(stale)


# The built wheel, in a fresh virtualenv ----------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this test run's virtualenv or import path, so only the fresh venv answers."""
    env = {key: value for key, value in os.environ.items() if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    return {**env, **extra}


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory) -> Path:
    """The wheel, built by the same script `make client-wheel` runs."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(CLIENT_PROJECT / "build_wheel.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheel = Path(result.stdout.strip().splitlines()[-1])
    assert wheel.name == "tollgate_client-0.1.0-py3-none-any.whl" and wheel.is_file()
    return wheel


@pytest.fixture(scope="module")
def client_python(client_wheel, tmp_path_factory) -> Path:
    """The interpreter of a new virtualenv (no system site-packages) with the wheel and its dependencies installed."""
    venv = tmp_path_factory.mktemp("client-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=clean_env())
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", str(client_wheel)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600, env=clean_env())
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def run_in(python: Path, code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run code in the fresh venv from a folder outside the checkout (`-c` puts the cwd on sys.path)."""
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(**env),
    )


@pytest.mark.slow
def test_the_wheel_holds_the_recorder_and_the_typed_stubs_under_a_namespace_it_does_not_own(client_wheel):
    with zipfile.ZipFile(client_wheel) as wheel:
        files = set(wheel.namelist())
        metadata = wheel.read("tollgate_client-0.1.0.dist-info/METADATA").decode()
    packages = {path.split("/")[1] for path in files if path.startswith("tollgate/")}
    assert packages == {"clients", "usage", "policy", "audit"}
    assert "tollgate/__init__.py" not in files
    assert {"tollgate/clients/recorder/recorder.py", "tollgate/usage/v1/usage_pb2_grpc.py"} <= files
    for stub in ("usage", "policy", "audit"):
        assert {f"tollgate/{stub}/py.typed", f"tollgate/{stub}/v1/{stub}_pb2.pyi"} <= files
    assert "tollgate/clients/py.typed" in files
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in files)
    field = "Requires-Dist:"
    requires = sorted(line.removeprefix(field).strip() for line in metadata.splitlines() if line.startswith(field))
    assert requires == sorted(pins(CLIENT_PROJECT / "pyproject.toml").values())


@pytest.mark.slow
def test_the_installed_client_imports_without_the_server_stack_and_shares_the_tollgate_namespace(
    client_python, tmp_path
):
    other = tmp_path / "other" / "tollgate" / "extra"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("NAME = 'another distribution'\n")
    result = run_in(
        client_python,
        """
        import importlib.util, json, os
        from tollgate.clients.recorder import UsageRecorder
        from tollgate.usage.v1 import usage_pb2_grpc
        from tollgate.policy.v1 import policy_pb2_grpc
        import tollgate.extra

        def absent(names):
            return [name for name in names if importlib.util.find_spec(name) is None]

        print(json.dumps({
            "recorder": UsageRecorder.__module__,
            "stub": usage_pb2_grpc.UsageServiceStub.__name__,
            "from": usage_pb2_grpc.__file__,
            "extra": tollgate.extra.NAME,
            "absent": absent(json.loads(os.environ["SERVER_STACK"])),
            "server": absent(["tollgate.shared", "tollgate.services"]),
        }))
        """,
        cwd=tmp_path,
        PYTHONPATH=str(tmp_path / "other"),
        SERVER_STACK=json.dumps(SERVER_STACK),
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["recorder"] == "tollgate.clients.recorder.recorder" and seen["stub"] == "UsageServiceStub"
    assert seen["from"].startswith(str(client_python.parents[1])) and "site-packages" in seen["from"]
    assert seen["extra"] == "another distribution"  # tollgate/ is a namespace: another distribution adds to it
    assert seen["absent"] == list(SERVER_STACK)
    assert seen["server"] == ["tollgate.shared", "tollgate.services"]


@pytest.mark.slow
def test_every_module_the_wheel_ships_imports_with_grpcio_and_protobuf_alone(client_wheel, client_python, tmp_path):
    with zipfile.ZipFile(client_wheel) as wheel:
        modules = sorted(
            path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for path in wheel.namelist()
            if path.startswith("tollgate/") and path.endswith(".py")
        )
    assert "tollgate.usage.v1.usage_pb2_grpc" in modules
    program = f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)"
    result = run_in(client_python, program, tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_installed_stubs_carry_their_types_to_a_type_checker(client_python, tmp_path):
    program = tmp_path / "typed.py"
    program.write_text(
        "from tollgate.usage.v1 import usage_pb2\n"
        "from tollgate.clients.recorder import UsageRecorder\n"
        "usage_pb2.GetUsageRequest(tenant_id=7)\n"
        "def record(recorder: UsageRecorder) -> None:\n"
        "    recorder.record('wheel.calls', 'one')\n"
    )
    mypy = [sys.executable, "-m", "mypy", "--python-executable", str(client_python), "--no-incremental"]
    result = subprocess.run([*mypy, str(program)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    # Both errors are found only if mypy reads the installed .pyi and the recorder's annotations (py.typed).
    assert "typed.py:3: error" in result.stdout and "tenant_id" in result.stdout, result.stdout
    assert 'typed.py:5: error: Argument 2 to "record" of "UsageRecorder"' in result.stdout, result.stdout
    assert "missing library stubs or py.typed marker" not in result.stdout
    assert "Found 2 errors" in result.stdout, result.stdout


@pytest.mark.slow
def test_the_installed_recorder_records_events_once_and_get_usage_reads_them_back(
    client_python, dbs, usage, tenant, tmp_path
):
    token = support.make_token(dbs, tenant=tenant, scopes=["usage:write", "usage:read"])
    result = run_in(
        client_python,
        """
        import json, os
        from datetime import UTC, datetime, timedelta
        import grpc
        from tollgate.clients.recorder import UsageRecorder
        from tollgate.usage.v1 import usage_pb2, usage_pb2_grpc

        target, token, tenant = os.environ["TARGET"], os.environ["TOKEN"], os.environ["TENANT"]
        at = datetime.now(UTC)
        with UsageRecorder(target, token, tenant, "spool.db", source_service="wheel-test") as recorder:
            for n, quantity in enumerate((2, 3, 5)):
                recorder.record("leads.processed", quantity, occurred_at=at, actor_id="bob", event_id=f"wheel-{n}")
            # The same event again: a resend counts nothing.
            recorder.record("leads.processed", 2, occurred_at=at, actor_id="bob", event_id="wheel-0")
            flushed = recorder.flush(timeout=30)
            counters = recorder.counters()
        now = datetime.now(UTC)
        request = usage_pb2.GetUsageRequest(tenant_id=tenant)
        request.start_time.FromDatetime(now - timedelta(hours=1))
        request.end_time.FromDatetime(now + timedelta(hours=1))
        with grpc.insecure_channel(target) as channel:
            response = usage_pb2_grpc.UsageServiceStub(channel).GetUsage(
                request, metadata=(("authorization", f"Bearer {token}"),), timeout=10
            )
        print(json.dumps({
            "flushed": flushed,
            "sent": counters.sent,
            "duplicate": counters.duplicate,
            "refused": counters.conflict + counters.rejected,
            "totals": {t.metric: [t.quantity, t.event_count] for t in response.totals},
        }))
        """,
        cwd=tmp_path,
        TARGET=f"127.0.0.1:{usage.port}",
        TOKEN=token,
        TENANT=tenant,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["flushed"] is True
    assert (seen["sent"], seen["duplicate"], seen["refused"]) == (3, 1, 0)
    assert seen["totals"] == {"leads.processed": [10, 3]}
