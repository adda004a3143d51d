"""A scriptable threaded HTTP server on 127.0.0.1 for download tests: each path answers as it is told to.

    with FaultServer() as srv:
        srv.route("/a.jpg", body=jpeg, headers={"Content-Type": "image/jpeg"})
        srv.route("/slow", body=b"x" * 100, drip_s=0.2)        # one byte every 0.2 s
        srv.route("/old", status=302, headers={"Location": "/a.jpg"})
        srv.url("/a.jpg")

        srv.route("/evil", script=[b"HTTP/1.1 200 OK\r\n", 0.5, b"Content-"])  # raw bytes and pauses, then close
        srv.route("/dyn", script=lambda query: [b"HTTP/1.1 302 Found\r\nLocation: " + query.encode() + ...])

It counts requests per path, connections, and the most requests in flight at once (per-host caps are checked
from the server's side); ``requests`` keeps each request's path and headers, ``script_bytes`` what scripts sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0  # before answering
    drip_s: float = 0.0  # between body bytes
    send_bytes: int | None = None  # send only this many body bytes, then close (a truncated response)
    length: int | None = None  # Content-Length to announce (default: len(body)); -1: none, close-delimited
    fail_first: int = 0  # answer the first N requests with fail_status / fail_headers instead
    fail_status: int = 503
    fail_headers: dict = field(default_factory=dict)
    # raw answer: bytes are sent as they are, numbers are pauses (seconds); then the connection is closed.
    # A callable gets the query string and returns such an iterable (a generator may never end: it stops
    # when the client hangs up).
    script: Iterable | Callable[[str], Iterable] | None = None


class FaultServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, Route] = {}
        self.hits: Counter = Counter()
        self.connections = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[tuple[str, dict]] = []
        self.script_bytes = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real image servers

            def setup(self):
                super().setup()
                with server._lock:
                    server.connections += 1

            def log_message(self, *a):
                pass

            def do_GET(self):
                path, _, query = self.path.partition("?")
                with server._lock:
                    server.requests.append((self.path, dict(self.headers.items())))
                    server.hits[path] += 1
                    nth = server.hits[path]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    route = server.routes.get(path, Route(404, b"not found"))
                    if nth <= route.fail_first:
                        route = Route(route.fail_status, b"try later", route.fail_headers)
                    if route.script is not None:
                        self._play(route.script(query) if callable(route.script) else route.script)
                    else:
                        self._answer(route)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _play(self, script: Iterable):
                self.close_connection = True
                try:
                    for step in script:
                        if isinstance(step, (int, float)):
                            time.sleep(step)
                            continue
                        self.wfile.write(step)
                        self.wfile.flush()
                        with server._lock:
                            server.script_bytes += len(step)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

            def _answer(self, r: Route):
                if r.delay_s:
                    time.sleep(r.delay_s)
                self.send_response(r.status)
                for k, v in r.headers.items():
                    self.send_header(k, v)
                length = len(r.body) if r.length is None else r.length
                if length >= 0:
                    self.send_header("Content-Length", str(length))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                body = r.body if r.send_bytes is None else r.body[: r.send_bytes]
                try:
                    if r.drip_s:
                        for i in range(len(body)):
                            self.wfile.write(body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(r.drip_s)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                if r.send_bytes is not None or length < 0:
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # clients hanging up is part of the tests
                pass

        self.httpd = Server((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, path: str, **kw) -> str:
        self.routes[path] = Route(**kw)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
