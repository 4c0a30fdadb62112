"""TLS from PEM files named in the environment: a server's certificate (and, for mutual TLS, the CA its
clients' certificates must chain to), and a client's trust and own certificate.

The server re-reads its files when they change, at the next new connection: a rotated Secret (cert-manager
renewing `tls.crt`) takes effect without a restart, and connections already open keep the certificate
they started with. A client reads its files once, at start. docs/operations.md#tls.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from tollgate.shared.config import ConfigError

log = logging.getLogger("tollgate.shared.tls")


def _read(path: str, variable: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as error:
        raise ConfigError(f"{variable} cannot be read: {error}") from None


@dataclass(frozen=True)
class ServerTls:
    """A server's TLS: off when `cert_file` is empty; `client_ca_file` set means mutual TLS (a client must
    present a certificate issued by that CA). `prefix` names the variables in errors ("USAGE")."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    prefix: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def check(self) -> None:
        """Raise ConfigError when the paths do not make a configuration (files are read at start)."""
        p = self.prefix
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{p}_TLS_CERT_FILE and {p}_TLS_KEY_FILE must be set together")
        if self.client_ca_file and not self.cert_file:
            raise ConfigError(f"{p}_TLS_CLIENT_CA_FILE needs {p}_TLS_CERT_FILE and {p}_TLS_KEY_FILE (mutual TLS)")

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials that reload the files when they change; ConfigError (naming the variable) if unreadable."""
        initial = self._configuration()
        return grpc.dynamic_ssl_server_credentials(
            initial,
            _Reloader(self, initial, self._configuration).fetch,
            require_client_authentication=bool(self.client_ca_file),
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same settings for a server speaking TLS through Python's ssl module (an HTTP server)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file:
                context.load_verify_locations(self.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"{self.prefix}_TLS_* files cannot be used: {error}") from None
        # HTTP/1.1 only: a client offering h2 as well (curl) is told so in the handshake, not by a failed call.
        context.set_alpn_protocols(["http/1.1"])
        return context

    def ssl_contexts(self) -> Callable[[], ssl.SSLContext]:
        """A function answering the SSLContext to wrap a new connection with: the same one until the files
        change, then one made from the new files (kept only when they load, as for gRPC)."""
        reloader = _Reloader(self, self.ssl_context(), self.ssl_context)

        def current() -> ssl.SSLContext:
            reloader.fetch()
            return reloader.current

        return current

    def _stamp(self) -> tuple:
        return tuple(_mtime(path) for path in (self.cert_file, self.key_file, self.client_ca_file) if path)

    def _configuration(self):
        p = self.prefix
        chain, key = _read(self.cert_file, f"{p}_TLS_CERT_FILE"), _read(self.key_file, f"{p}_TLS_KEY_FILE")
        _check_pair(self.cert_file, self.key_file, p)
        roots = _read(self.client_ca_file, f"{p}_TLS_CLIENT_CA_FILE") if self.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)


class _Reloader:
    """Asked before each new connection's handshake (by gRPC, or by the HTTP server's accept loop): a changed
    file gives a new configuration, made by `load`."""

    def __init__(self, tls: ServerTls, initial, load: Callable[[], Any]):
        self._tls, self._stamp, self._lock, self._load = tls, tls._stamp(), threading.Lock(), load
        self.current = initial

    def fetch(self):
        stamp = self._tls._stamp()
        if stamp == self._stamp:
            return None
        with self._lock:
            try:
                configuration = self._load()
            except ConfigError as error:
                # Mid-rotation or broken: keep serving with the certificate we have, and try again next time.
                log.warning("TLS files changed but cannot be loaded; keeping the current certificate: %s", error)
                return None
            if self._tls._stamp() != stamp:  # rewritten while we read: the pair may be mixed, read it next time
                return None
            self._stamp, self.current = stamp, configuration
            log.info("TLS certificate reloaded", extra={"fields": {"cert_file": self._tls.cert_file}})
            return configuration


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


def _check_pair(cert_file: str, key_file: str, prefix: str) -> None:
    """A key that is not the certificate's would fail every handshake: refuse it here, naming the files."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            f"{prefix}_TLS_CERT_FILE and {prefix}_TLS_KEY_FILE are not a certificate and its key: {error}"
        ) from None


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS: off when `ca_file` is empty (plaintext); `cert_file`/`key_file` present a client
    certificate (mutual TLS); `server_name` overrides the name checked in the server's certificate.
    `prefix` names the variables in errors ("POLICY_USAGE")."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    prefix: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file)

    def check(self) -> None:
        p = self.prefix
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(f"{p}_TLS_CERT_FILE and {p}_TLS_KEY_FILE must be set together")
        if (self.cert_file or self.server_name) and not self.ca_file:
            raise ConfigError(f"{p}_TLS_CERT_FILE, _KEY_FILE and _SERVER_NAME need {p}_TLS_CA_FILE")

    def channel(self, address: str, options: list[tuple[str, object]]) -> grpc.Channel:
        """A channel to `address`: TLS when enabled, else plaintext."""
        if not self.enabled:
            return grpc.insecure_channel(address, options=options)
        p = self.prefix
        key = _read(self.key_file, f"{p}_TLS_KEY_FILE") if self.key_file else None
        chain = _read(self.cert_file, f"{p}_TLS_CERT_FILE") if self.cert_file else None
        credentials = grpc.ssl_channel_credentials(_read(self.ca_file, f"{p}_TLS_CA_FILE"), key, chain)
        if self.server_name:
            options = [*options, ("grpc.ssl_target_name_override", self.server_name)]
        return grpc.secure_channel(address, credentials, options=options)
