"""Replay a Dockerfile's steps outside Docker, into a temporary root, for tests/deploy/test_deploy_image.py.

Container paths (/src, /app, /opt/...) are re-rooted under `root`; COPY, ENV, WORKDIR, SHELL
and RUN run as Docker would run them, so a broken step fails here as it would in `docker build`.
Only user creation (a RUN starting with groupadd/useradd) is skipped: it needs root, and the
test asserts the numeric USER separately. An instruction this replay does not know fails it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

CONTAINER_ROOTS = re.compile(r"(?<![\w./-])(/opt/|/src\b|/app\b)")
SKIPPED_RUN = ("groupadd ", "useradd ")
IGNORED = {"EXPOSE", "CMD", "ENTRYPOINT", "LABEL", "ARG", "USER", "STOPSIGNAL"}


class ReplayError(RuntimeError):
    """A Dockerfile step failed or cannot be replayed."""


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)


def parse(dockerfile: Path) -> list[Stage]:
    """Stages of a Dockerfile: base image, name, and (instruction, argument) steps."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, arg = line.partition(" ")
        op, arg = op.upper(), " ".join(arg.split()) if op.upper() != "RUN" else arg.strip()
        if op == "FROM":
            words = arg.split()
            stages.append(Stage(words[0], words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        else:
            stages[-1].steps.append((op, arg))
    return stages


@dataclass
class Process:
    popen: subprocess.Popen
    log: Path

    def stderr_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def terminate_and_wait(self, timeout: float) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@dataclass
class Image:
    """The replayed final stage: its environment and working directory, re-rooted."""

    root: Path
    env: dict[str, str]
    workdir: Path

    def _command(self, command: list[str]) -> list[str]:
        return [rebase(part, self.root) for part in command]

    def run(self, command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            self._command(command),
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, command: list[str], env: dict[str, str]) -> Process:
        log = self.root / f"process-{len(list(self.root.glob('process-*')))}.log"
        with log.open("w") as handle:
            popen = subprocess.Popen(
                self._command(command),
                cwd=self.workdir,
                env={**self.env, **env},
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        return Process(popen, log)


def rebase(text: str, root: Path) -> str:
    return CONTAINER_ROOTS.sub(lambda m: f"{root}{m.group(1)}", text)


def expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), text)


def base_env(root: Path) -> dict[str, str]:
    """This machine's environment (pip's local index settings) with `python` as the base image's."""
    bin_dir = root / "usr-local-bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = Path(getattr(sys, "_base_executable", sys.executable))
    for name in ("python", "python3"):
        (bin_dir / name).unlink(missing_ok=True)
        (bin_dir / name).symlink_to(python)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "USAGE_", "POLICY_"))}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def replay(dockerfile: Path, *, context: Path, root: Path) -> Image:
    """Run every stage's steps under `root`; returns the final stage as an Image."""
    root.mkdir(parents=True, exist_ok=True)
    env = workdir = None
    for stage in parse(dockerfile):
        env, workdir, shell = base_env(root), root, ["/bin/sh", "-c"]
        for op, arg in stage.steps:
            arg = rebase(arg, root)
            if op == "WORKDIR":
                workdir = Path(expand(arg, env))
                workdir.mkdir(parents=True, exist_ok=True)
            elif op == "ENV":
                for pair in shlex.split(arg):
                    key, _, value = pair.partition("=")
                    env[key] = expand(value, env)
            elif op == "SHELL":
                shell = json.loads(arg)
            elif op == "COPY":
                _copy(arg, context=context, root=root, workdir=workdir)
            elif op == "RUN":
                if not arg.startswith(SKIPPED_RUN):
                    _run(shell, arg, cwd=workdir, env=env)
            elif op not in IGNORED:
                raise ReplayError(f"cannot replay {op} {arg}")
    return Image(root, env, workdir)


def _copy(arg: str, *, context: Path, root: Path, workdir: Path) -> None:
    words = arg.split()
    if words[0].startswith("--from="):
        sources, dest = words[1:-1], words[-1]
        if any(Path(source) != Path(dest) for source in sources):
            raise ReplayError(f"cannot replay COPY {arg}: a stage copy must keep its path")
        return  # the builder stage already wrote it at the same (re-rooted) path
    *sources, dest = words
    target = Path(dest) if Path(dest).is_absolute() else workdir / dest
    excluded = _dockerignored(context)
    by_name = shutil.ignore_patterns("__pycache__", "*.pyc")

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {name for name in names if Path(directory, name) in excluded} | by_name(directory, names)

    for source in sources:
        path = context / source
        if path.is_dir():
            shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
        else:
            final = target / path.name if dest.endswith("/") or target.is_dir() else target
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, final)


def _dockerignored(context: Path) -> set[Path]:
    """The paths .dockerignore keeps out of the context by name (what Docker would not send, such as the stubs a
    checkout generated, which the image must generate itself)."""
    dockerignore = context / ".dockerignore"
    lines = dockerignore.read_text().splitlines() if dockerignore.exists() else []
    return {context / line for line in lines if line and not line.startswith(("#", "!", "*"))}


def _run(shell: list[str], command: str, *, cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run([*shell, command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ReplayError(f"RUN {command}\nexit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_status(port: int, service: str) -> str:
    """The grpc.health.v1 status name a server reports for `service`."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
