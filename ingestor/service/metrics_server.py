"""In-process metrics with Prometheus text exposition, and the optional HTTP endpoint."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from aiohttp import web

from ingestor.core.metrics import Metrics
from ingestor.errors import ServiceError


class MetricsServer:
    """`/healthz` and `/metrics` on host:port (127.0.0.1 by default)."""

    def __init__(
        self, metrics: Metrics, host: str, port: int, healthy: Callable[[], tuple[bool, str]]
    ) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self.healthy = healthy
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ServiceError(self._why(exc)) from None
        server = site._server
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    def _why(self, exc: OSError) -> str:
        if isinstance(exc, socket.gaierror):
            return f"metrics.host {self.host!r}: cannot be resolved ({exc.strerror})"
        what = exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE:
            what = "the port is in use (another ingestor, or another program)"
        return f"metrics.port {self.port} on {self.host}: {what}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        """200 "ok" while records can be written; else 503 and why."""
        ok, why = self.healthy()
        return web.Response(status=200 if ok else 503, text="ok\n" if ok else f"unhealthy: {why}\n")

    async def _metrics(self, _request: web.Request) -> web.Response:
        await self.metrics.collect()
        return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")
