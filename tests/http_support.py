"""Calling the services' HTTP port (Connect JSON or binary, gRPC-Web) from tests, over a real loopback socket."""

from __future__ import annotations

import base64
import http.client
import json
import struct
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def message(self, cls: type[Message]) -> Message:
        return json_format.Parse(self.body, cls())

    def details(self) -> list[tuple[str, bytes]]:
        """(type, bytes) of each detail of a Connect error body."""
        return [(d["type"], _b64(d["value"])) for d in self.json().get("details", [])]


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def post(
    port: int,
    path: str,
    body: bytes | str | dict | Message,
    *,
    token: str | None = None,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    connection: http.client.HTTPConnection | None = None,
) -> Reply:
    """One request; a dict or a message is sent as proto3 JSON."""
    if isinstance(body, Message):
        body = json_format.MessageToJson(body)
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    sent = {"content-type": content_type, **(headers or {})}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    own = connection is None
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        if own:
            conn.close()


def rpc_path(service: str, method: str) -> str:
    return f"/{service}/{method}"


def status_details(status: status_pb2.Status | None) -> list[tuple[str, bytes]]:
    """(type, bytes) of each detail of a gRPC rich status, in the shape Reply.details gives."""
    if status is None:
        return []
    return [(d.type_url.removeprefix("type.googleapis.com/"), d.value) for d in status.details]


def envelope(payload: bytes, flags: int = 0) -> bytes:
    """One message of a Connect or gRPC-Web stream: flags, big-endian length, payload."""
    return struct.pack(">BI", flags, len(payload)) + payload


def envelopes(data: bytes) -> list[tuple[int, bytes]]:
    """(flags, payload) of each message of a Connect or gRPC-Web stream body."""
    out, at = [], 0
    while at < len(data):
        flags, size = struct.unpack(">BI", data[at : at + 5])
        out.append((flags, data[at + 5 : at + 5 + size]))
        at += 5 + size
    return out
