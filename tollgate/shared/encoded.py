"""Responses kept encoded by the key of the answer they encode, for answers a use case keeps and gives again
(QueryUsage's, CheckEntitlement's): the same answer is answered with the bytes made for it before. The
interceptor passes a handler's bytes as they are; over HTTP they are read back into the response."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from google.protobuf.message import Message


class EncodedResponses:
    """The most recent responses, up to `max_bytes` of them (0: none kept). Shared by the RPC threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._kept: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def response(self, answer: Hashable | None, build: Callable[[], Message]) -> Message | bytes:
        """The response of the answer named `answer`: its bytes, kept or made now by `build`; when the answer has
        no name (None: it is not kept), the message `build` makes."""
        if answer is None or not self.max_bytes:
            return build()
        with self._lock:
            kept = self._kept.get(answer)
            if kept is not None:
                self._kept.move_to_end(answer)
                return kept
        encoded = build().SerializeToString()
        with self._lock:
            old = self._kept.pop(answer, None)
            self._bytes += len(encoded) - (len(old) if old is not None else 0)
            self._kept[answer] = encoded
            while self._bytes > self.max_bytes:
                self._bytes -= len(self._kept.popitem(last=False)[1])
        return encoded
