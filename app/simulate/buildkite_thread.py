"""Serve an ASGI app with uvicorn in a background thread on a loopback port the OS picks.

The socket is bound here (127.0.0.1, port 0) and handed to uvicorn, so parallel test workers never
race for a port and the URL is known before the first request.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp


class LoopbackServer:
    """One uvicorn server in a daemon thread; `start()` returns its base URL."""

    def __init__(self, app: ASGIApp, *, name: str = "fake-server", port: int = 0) -> None:
        self.app = app
        self.port = port  # 0: any free port (tests); a fixed one for the `simulate` command's flag
        self.name = name
        self.base_url: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self, *, timeout_seconds: float = 10.0) -> str:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Accepted sockets inherit this. Without it uvicorn's separate header and body writes meet
        # Nagle plus the client's delayed ACK: every response with a body took ~45 ms instead of ~1 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()  # a fixed port may be taken
            raise
        sock.listen(128)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._socket = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        self._wait_started(timeout_seconds)
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    def _wait_started(self, timeout_seconds: float) -> None:
        assert self._server is not None and self._thread is not None
        deadline = time.monotonic() + timeout_seconds
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} exited while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start within {timeout_seconds} s")
            time.sleep(0.005)

    def stop(self, *, timeout_seconds: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout_seconds)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
