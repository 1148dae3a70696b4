"""`FakeKubeAPI`: a faithful stand-in for kube-apiserver, served over real HTTP on loopback.

Start it, point the official `kubernetes` client (or httpx) at `start()`'s URL, and the code under test
sees resourceVersions, list + watch with replay and 410 Gone, selectors, 404/409/422 `Status` bodies,
the three patch types, the pods/status subresource and graceful pod deletion. Tests also reach inside:
read or force objects, arm faults (`inject`), drop watch streams, expire the watch history, and count
requests by verb and resource.

    with FakeKubeAPI() as kube:             # or: url = kube.start(); ...; kube.stop()
        client = kubernetes.client.ApiClient(kube_client_config(kube.url))

The server is uvicorn on its own thread and event loop; the socket is bound here (port 0) so the port
is known before the server starts and parallel test workers never collide.
"""

from __future__ import annotations

import asyncio
import copy
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from app.simulate import kube_status
from app.simulate.kube_faults import Fault, FaultBook
from app.simulate.kube_handlers import Call, Handlers
from app.simulate.kube_http import KubeHttp
from app.simulate.kube_resources import by_name
from app.simulate.kube_store import Clock, Store
from app.simulate.started import Started

Json = dict[str, Any]


class FakeKubeAPI(Started):
    """A fake kube-apiserver with in-process helpers for tests."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        history_size: int = 1000,
        bookmark_interval: float = 1.0,
        watch_timeout: float = 1800.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.clock = clock
        self.store = Store(clock=clock, history_size=history_size)
        self.faults = FaultBook()
        self.handlers = Handlers(self.store, clock=clock)
        # 1800 s is the apiserver's --min-request-timeout: watches end (and clients re-watch) that often.
        self.http = KubeHttp(
            self.handlers, self.faults, bookmark_interval=bookmark_interval, watch_timeout=watch_timeout
        )
        self._host = host
        self._port = port  # 0: any free port (tests); a fixed one for the `simulate` command's flag
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.url = ""

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        """Serve on a fresh loopback port; return the base URL (e.g. `http://127.0.0.1:41234`)."""
        if self._server is not None:
            return self.url
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit TCP_NODELAY; without it Nagle + delayed ACK adds ~40 ms per
        # response (asyncio does not set it on sockets handed to uvicorn).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()  # a fixed port may be taken
            raise
        port = sock.getsockname()[1]
        self.url = f"http://{self._host}:{port}"
        self.http.server_address = f"{self._host}:{port}"
        config = uvicorn.Config(
            self.http.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
        )
        self._server, self._socket = uvicorn.Server(config), sock
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=f"fake-kube-{port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake kube-apiserver did not start")
            time.sleep(0.002)
        return self.url

    def _serve(self) -> None:
        # uvicorn's own serve() polls for exit every 0.1 s and drains for another 0.1 s; a test fake
        # needs neither, so the loop is driven here and stopped directly (stop() takes ~1 ms).
        assert self._server is not None and self._loop is not None and self._socket is not None
        server, loop = self._server, self._loop
        asyncio.set_event_loop(loop)
        server.config.load()
        server.lifespan = server.config.lifespan_class(server.config)
        loop.run_until_complete(server.startup(sockets=[self._socket]))
        loop.run_forever()
        loop.run_until_complete(self._halt(server))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _halt(self, server: uvicorn.Server) -> None:
        for listener in server.servers:
            listener.close()
        self.store.close_watchers()
        for connection in list(server.server_state.connections):
            connection.shutdown()
        # Let responses finish (dropped watches end within a loop turn or two), then cancel stragglers.
        deadline = time.monotonic() + 1.0
        while server.server_state.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A transport closes its socket one loop turn after `close()`; closing the loop before that
        # turn leaves the socket for the garbage collector, which warns in whichever test runs then.
        for connection in list(server.server_state.connections):
            connection.transport.close()
        await asyncio.sleep(0)  # that turn: the close callbacks were queued before this wakeup
        for listener in server.servers:
            await listener.wait_closed()

    def stop(self) -> None:
        """End open watches, stop the server and release the port."""
        if self._server is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = self._loop = None

    # ---- reading and forcing objects ---------------------------------------------------------------

    def get(self, resource: str, name: str, namespace: str = "default") -> Json | None:
        """A copy of the stored object, or None."""
        obj = self.store.get(resource, namespace, name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None) -> list[Json]:
        return copy.deepcopy(self.store.list(resource, namespace)[0])

    def create(self, resource: str, obj: Json, namespace: str = "default") -> Json:
        """Create through the same validation as the HTTP API (raises `ApiError` if refused)."""
        _, created = self.handlers.create(Call("create", by_name(resource), namespace, body=obj))
        return copy.deepcopy(created)

    def modify(
        self, resource: str, name: str, change: Callable[[Json], None], namespace: str = "default"
    ) -> Json:
        """Apply `change` to a copy of the object and store it unvalidated (to force states in tests)."""
        rtype = by_name(resource)
        current = self.store.get(resource, namespace, name)
        if current is None:
            raise kube_status.not_found(resource, name, rtype.group)
        updated = copy.deepcopy(current)
        change(updated)
        return copy.deepcopy(self.store.replace(rtype, namespace, updated))

    def remove(self, resource: str, name: str, namespace: str = "default") -> Json:
        """Delete at once, bypassing graceful deletion (as `--force --grace-period=0` does)."""
        return copy.deepcopy(self.store.delete(by_name(resource), namespace, name))

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def wait_for(
        self,
        resource: str,
        name: str,
        predicate: Callable[[Json | None], bool],
        *,
        namespace: str = "default",
        timeout: float = 5.0,
    ) -> Json | None:
        """Poll the stored object until `predicate(obj)` holds (obj is None once deleted)."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(resource, name, namespace)
            if predicate(obj):
                return obj
            if time.monotonic() > deadline:
                raise TimeoutError(f"{resource}/{name} never satisfied the condition; last seen: {obj}")
            time.sleep(0.01)

    # ---- faults and accounting --------------------------------------------------------------------

    def inject(
        self,
        verb: str,
        resource: str,
        *,
        status: int | None = None,
        count: int = 1,
        delay: float = 0.0,
        retry_after: int | None = None,
        quota: bool = False,
        message: str = "",
    ) -> None:
        """Make the next `count` `verb` requests on `resource` ("pods", "pods/status", "*") fail and/or stall.

        `status=None` with a `delay` only slows them. 403 is RBAC "forbidden" unless `quota=True`
        ("exceeded quota"); 429 and 503 carry `Retry-After` when `retry_after` is given (429 always does).
        """
        self.faults.arm(Fault(verb, resource, status, count, delay, retry_after, quota, message))

    def clear_faults(self) -> None:
        self.faults.clear()

    def request_count(
        self, verb: str | None = None, resource: str | None = None, *, kubelet: bool = False
    ) -> int:
        """Requests served so far, optionally by verb / resource; the kubelet's are counted apart."""
        return self.faults.count(verb, resource, kubelet=kubelet)

    def drop_watches(self, resource: str | None = None) -> int:
        """Close every open watch stream (of `resource`, or all); returns how many were closed."""
        return self.store.close_watchers(None if resource is None else [resource])

    def expire_history(self) -> int:
        """Compact the history: the next watch from any older resourceVersion gets 410 Expired."""
        return self.store.expire_history()
