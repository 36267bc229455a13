"""A small real HTTP/1.1 server on 127.0.0.1 whose answers a test scripts.

For misbehaviour the emulator does not do: connection resets, truncated
bodies, HTML error pages, ``Retry-After`` dates, redirects. Every request is
recorded (method, path, headers, body) so tests can count hits and check
headers.

    with ScriptedServer() as srv:
        srv.script(Reply(500), Reply.json({"id": "vgen_1", "status": "queued"}))
        ...
        assert srv.hits() == 2

Replies are consumed in order; once the script is exhausted the last reply
is repeated when ``repeat_last`` is set, else a 599 "unscripted" answer is
sent (so a test notices an unexpected request).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer.

    ``truncate_at``: send the headers (with the full Content-Length) but only
    this many body bytes, then close (with a TCP RST, or an orderly FIN when
    ``fin`` is set). ``reset``: read the request, then close
    with a TCP RST and no answer. ``reset_after_headers``: send the status
    line and headers, then RST. ``chunked``: send the body with chunked
    transfer encoding (combined with ``truncate_at`` the last chunk is cut).
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate_at: int | None = None
    reset: bool = False
    reset_after_headers: bool = False
    chunked: bool = False
    fin: bool = False
    delay_s: float = 0.0

    @classmethod
    def json(cls, obj: Any, status: int = 200, **headers: str) -> Reply:
        body = json.dumps(obj).encode()
        return cls(status, body, {"Content-Type": "application/json", **_hdrs(headers)})

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain", **headers: str) -> Reply:
        return cls(status, text.encode(), {"Content-Type": content_type, **_hdrs(headers)})

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Reply:
        return cls(status, b"", {"Location": location})


def _hdrs(kw: dict[str, str]) -> dict[str, str]:
    """``Retry_After="1"`` → ``{"Retry-After": "1"}``."""
    return {k.replace("_", "-"): v for k, v in kw.items()}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class ScriptedServer:
    """Start on construction; ``url`` is ``http://127.0.0.1:<port>``."""

    def __init__(self, *, repeat_last: bool = False, port: int = 0) -> None:
        self.requests: list[Recorded] = []
        self._script: list[Reply | Callable[[Recorded], Reply]] = []
        self._lock = threading.Lock()
        self.repeat_last = repeat_last
        self._last: Reply | Callable[[Recorded], Reply] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(self.command, self.path, dict(self.headers.items()), body, time.monotonic())
                reply = server._next(rec)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.reset:
                    self._rst()
                    return
                head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('X',))[0]}"]
                headers = dict(reply.headers)
                if reply.chunked:
                    headers["Transfer-Encoding"] = "chunked"
                else:
                    headers.setdefault("Content-Length", str(len(reply.body)))
                head += [f"{k}: {v}" for k, v in headers.items()]
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
                if reply.reset_after_headers:
                    self.wfile.flush()
                    self._rst()
                    return
                body = reply.body if reply.truncate_at is None else reply.body[: reply.truncate_at]
                if reply.chunked:
                    payload = f"{len(reply.body):x}\r\n".encode() + body
                    if reply.truncate_at is None:
                        payload += b"\r\n0\r\n\r\n"
                    body = payload
                self.wfile.write(body)
                self.wfile.flush()
                if reply.truncate_at is not None:
                    if reply.fin:
                        self.close_connection = True
                    else:
                        self._rst()

            def _rst(self) -> None:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # resets and clients hanging up are the point here

        self._httpd = Server(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def script(self, *replies: Reply | Callable[[Recorded], Reply]) -> ScriptedServer:
        """Append replies (or functions of the request returning a reply)."""
        with self._lock:
            self._script.extend(replies)
        return self

    def _next(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            if self._script:
                item = self._script.pop(0)
                self._last = item
            elif self.repeat_last and self._last is not None:
                item = self._last
            else:
                item = Reply.text("unscripted request", 599)
        return item(rec) if callable(item) else item

    def hits(self, path_prefix: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
