"""Small helpers the HTTP resources share: error and JSON answers, the client's address."""

from __future__ import annotations

import json

from twisted.logger import Logger

log = Logger(namespace="bootserverd.http")


def client_ip(request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", "?")


def send_error(request, code: int, reason: str, *, level: str = "info", headers: dict | None = None) -> bytes:
    """A plain-text error whose body says why; one log line for it."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    for name, value in (headers or {}).items():
        request.setHeader(name.encode(), str(value).encode())
    body = f"{code} {reason}\n".encode("utf-8", "replace")  # reason may quote undecodable bytes
    request.setHeader(b"Content-Length", str(len(body)).encode())
    getattr(log, level)("HTTP {client} {method} {path} {code}: {reason}", client=client_ip(request),
                        method=request.method.decode("latin-1"),
                        path=request.uri.decode("latin-1", "replace")[:300], code=code, reason=reason)
    return b"" if request.method == b"HEAD" else body


def send_json(request, value, code: int = 200) -> bytes:
    body = (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.setHeader(b"Cache-Control", b"no-store")
    return b"" if request.method == b"HEAD" else body
