"""The lifecycle shared by the local protocol servers the tests talk to (the LLM
providers' and the Hub's): a threaded HTTP server on 127.0.0.1 in a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:  # no tracebacks on stderr
        pass


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no access log on stderr."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate small writes; with Nagle's algorithm on, the
    # body then waits for the client's delayed ACK (about 40 ms a response).
    disable_nagle_algorithm = True
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class LocalHttpServer:
    """Start/stop, context manager and URL of a local server.  A subclass gives its request
    handler class (`handler_class`) and the attribute through which a handler reaches the
    server object (`handler_attribute`)."""

    handler_attribute: str
    thread_name = "local-http-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host, self._port = host, port
        self._httpd: QuietServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        bound = type("_BoundHandler", (self.handler_class(),), {self.handler_attribute: self})
        self._httpd = QuietServer((self._host, self._port), bound)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def before_stop(self) -> None:
        """Called before shutting down (e.g. to release requests a test holds open)."""

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self.before_stop()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"
