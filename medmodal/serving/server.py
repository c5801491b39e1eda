"""The uvicorn server of ``medmodal serve``, with connection timeouts uvicorn lacks.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but a
connection that sends nothing, or a request line and headers a byte at a time, stays open
for as long as the client likes (uvicorn's h11 protocol arms no timer before the first
request head is complete). Many such connections tie up the server (a "slowloris"
attack). :class:`HeadTimeoutH11Protocol` closes a connection whose request head is not
complete ``head_timeout_s`` seconds after the connection opened (or, on a kept-alive
connection, after its next request began to arrive). The request *body* has its own
deadline in the app (:class:`medmodal.serving.app.RequestBodyGuard`, 408).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from medmodal.serving.security import ServingLimits


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for the request line and headers."""

    head_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._update_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._update_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _update_head_timer(self) -> None:
        """Armed while a request head is awaited (from the connection's start, or from the
        first bytes of a kept-alive connection's next request); off once the head is in.

        An idle kept-alive connection is left to uvicorn's keep-alive timer: only the
        first call (``connection_made``) and ``data_received`` (which cancels uvicorn's
        keep-alive timer) arm this one.
        """
        if not self._waiting_for_head():
            self._cancel_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._waiting_for_head():
            self.transport.close()


def protocol_with_head_timeout(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """:class:`HeadTimeoutH11Protocol` with its deadline set to ``seconds``."""
    return type("HeadTimeoutH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout_s": float(seconds)})


def uvicorn_config(app: Any, host: str, port: int, limits: ServingLimits, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn configuration of the service: the head-timeout h11 protocol, the keep-alive
    timeout and the connection limit of ``limits`` (uvicorn's ``limit_concurrency``: beyond it
    new requests get 503)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_with_head_timeout(limits.head_timeout_s),
        timeout_keep_alive=max(1, round(limits.keep_alive_s)),
        limit_concurrency=limits.max_connections,
        **kwargs,
    )
