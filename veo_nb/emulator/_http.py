"""The emulator's HTTP side: :class:`Server` (a threading server that stops
at once) and the request handlers of its two hosts, :class:`ApiHandler` (the
API, answered by :class:`~veo_nb.emulator._service.Service`) and
:class:`MediaHandler` (the CDN: no auth, Range requests, S3-style errors).
Faults are injected here, in front of the service and behind it."""

from __future__ import annotations

import json
import logging
import selectors
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ._dialects import RELATIVE_PREFIX
from ._faults import Faults
from ._media import parse_range
from ._service import Reply, Service, error_reply
from ._stats import MediaRequest

logger = logging.getLogger("veo_nb.emulator")

#: Largest create body accepted (bytes).
MAX_BODY_BYTES = 1 << 20


class Server(ThreadingHTTPServer):
    """A threading server that knows its service and faults, sleeps until a
    connection arrives (no polling) and stops at once, dropping open
    keep-alive connections."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], service: Service,
        faults: Faults,
    ) -> None:
        self.service = service
        self.faults = faults
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (slow on some machines).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def serve(self) -> None:
        """Accept connections until :meth:`stop` (a handler thread serves each)."""
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self and not self._stopping.is_set():
                        self._handle_request_noblock()  # type: ignore[attr-defined]  # BaseServer's accept-and-handle step, absent from typeshed

    def stop(self) -> None:
        """Make :meth:`serve` return, then close every connection and the socket."""
        self._stopping.set()
        self._wake_w.send(b"x")

    def close(self) -> None:
        """Close open connections and the listening socket (after :meth:`serve` returned)."""
        self._close_open_connections()
        self.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (or a reset a fault injected) is normal: log
        it at debug level; report anything else as the stdlib does."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("connection from %s ended abruptly", client_address, exc_info=True)
        else:
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def _close_open_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    """What both hosts' handlers share: HTTP/1.1 keep-alive, no Nagle, debug
    logs, GET answered by :meth:`_serve`."""

    protocol_version = "HTTP/1.1"
    server_version = "veo-nb-emulator"
    timeout = 60
    server: Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def _serve(self) -> None:
        """Answer the request (each host's own way)."""
        raise NotImplementedError

    def _send(
        self, status: int, body: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


class MediaServing(Handler):
    """Serving a task's video while its link is valid (the media host's
    job, and the API host's for links relative to it)."""

    def _serve_media(self, path: str) -> None:
        """Answer for the video at media ``path`` (``/v/<id>/<token>.mp4``)."""
        service = self.server.service
        found = service.media_file(path, service.now())

        def record(status: int) -> None:
            # Before answering, so a client that got its answer sees it counted.
            service.record_media(MediaRequest(
                method=self.command,
                path=path,
                status=status,
                authorization="Authorization" in self.headers,
                range=self.headers.get("Range"),
            ))

        if self.server.faults.intercept_media(self, record):
            return
        if found == 403:
            record(403)
            self._send_error_xml(403, "AccessDenied", "Request has expired")
            return
        if isinstance(found, int):
            record(404)
            self._send_error_xml(404, "NoSuchKey", "The specified key does not exist.")
            return
        size = found.stat().st_size
        wanted = parse_range(self.headers.get("Range"), size)
        if isinstance(wanted, str):  # "unsatisfiable"
            record(416)
            self._send(416, b"", "video/mp4", (("Content-Range", f"bytes */{size}"),))
            return
        status = 200 if wanted is None else 206
        first, last = (0, size - 1) if wanted is None else wanted
        record(status)
        service.count_media_bytes(self._stream(found, status, first, last, size))

    def _stream(self, file: Path, status: int, first: int, last: int, size: int) -> int:
        """Send ``file[first:last + 1]``; returns the body bytes sent."""
        count = last - first + 1
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(count))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        if self.command == "HEAD" or count == 0:
            return 0
        try:
            with file.open("rb") as source:
                return self.server.faults.send_body(self, source, first, count)
        except OSError as exc:  # the client went away mid-body
            logger.debug("media body interrupted: %s", exc)
            self.close_connection = True
            return 0

    def _send_error_xml(self, status: int, code: str, message: str) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n"
        ).encode()
        self._send(status, body, "application/xml")


class ApiHandler(MediaServing):
    """The API host: reads the body, lets faults in front act, asks the
    service; serves the videos of links relative to it (``/files/...``,
    the ``relative_link`` dialect)."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def _serve(self) -> None:
        service, faults = self.server.service, self.server.faults
        path = urlsplit(self.path).path
        if self.command == "GET" and path.startswith(RELATIVE_PREFIX + "/"):
            self._serve_media(path[len(RELATIVE_PREFIX):])
            return
        arrived = service.now()
        body = self._read_body()
        if not isinstance(body, Reply) and faults.intercept_api(self):
            return
        delay = service.latency_s + faults.api_delay()
        if isinstance(body, Reply):  # the body could not be read: the connection ends
            reply = body
        else:
            reply = service.handle_api(
                self.command, self.path, self.headers.get("Authorization"), body, arrived
            )
            held = faults.after_service(self)
            if held is None:  # the answer is lost
                return
            delay += held
        if delay:
            time.sleep(delay)
        data = json.dumps(reply.body, separators=(",", ":")).encode()
        self._send(reply.status, data, "application/json; charset=utf-8", reply.headers)

    def _read_body(self) -> bytes | Reply:
        close = ("Connection", "close")
        encoding = self.headers.get("Transfer-Encoding", "identity").strip().lower()
        if encoding != "identity":
            return error_reply(411, "invalid_request", "send the body with a Content-Length", close)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            return error_reply(400, "invalid_request", "invalid Content-Length header", close)
        if length > MAX_BODY_BYTES:
            return error_reply(
                413, "invalid_request", f"body larger than {MAX_BODY_BYTES} bytes", close
            )
        return self.rfile.read(length) if length else b""


class MediaHandler(MediaServing):
    """The media host: serves a task's video while its link is valid."""

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def _serve(self) -> None:
        self._serve_media(urlsplit(self.path).path)
