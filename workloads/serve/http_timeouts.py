"""uvicorn's httptools protocol with a deadline for reading each request and for idle connections.

uvicorn 0.54 has no deadline for reading a request, and arms its keep-alive timer only after a response:
a client that connects and sends nothing, or half its headers, or its headers and half the body, keeps
the connection (its socket, and once the headers are in, the app's task) open for ever. A few hundred of
them exhaust the process's file descriptors. This subclass adds two timers, and nothing else:

- idle: from the moment a connection is made, uvicorn's own keep-alive timer (`timeout_keep_alive`), so a
  connection that never sends a byte is closed like one idle after an answer;
- read: from the first byte of a request until its last, at most `HTTP_READ_TIMEOUT_SECONDS` (default
  5 s; headers and body together, not reset by each byte, so trickling bytes does not keep a request
  alive). When it passes, a request whose headers were complete is answered 408 (unless the app already
  answered) and the connection closed; a request still in its headers is just closed.

The time the app takes to answer is not limited here: the deadline ends with the request's last byte, and
it waits while uvicorn itself has stopped reading (flow control, pipelined requests).

Used by the model server (serve.py) and by the local platform daemon (`uvicorn.Config(http=...)`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from asyncio.events import TimerHandle
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

READ_TIMEOUT_ENV = "HTTP_READ_TIMEOUT_SECONDS"
KEEP_ALIVE_ENV = "HTTP_KEEP_ALIVE_SECONDS"
DEFAULT_READ_TIMEOUT_SECONDS = 5.0
# The app finds the 408 the protocol answered (to store it with the same request id) under this key of
# scope["extensions"], once its receive() has said http.disconnect.
READ_TIMEOUT_EXTENSION = "mlops.read_timeout"


def seconds_from_env(name: str, default: float, environ: Any = None) -> float:
    """A positive number of seconds from the environment; ValueError naming the variable otherwise."""
    raw = (os.environ if environ is None else environ).get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw[:40]!r}") from None
    if not 0 < value < 86_400:
        raise ValueError(f"{name} must be more than 0 and less than a day, got {raw[:40]!r}")
    return value


@functools.cache
def read_timeout_seconds() -> float:
    """Once per process: worker processes read it from the environment they were started with."""
    return seconds_from_env(READ_TIMEOUT_ENV, DEFAULT_READ_TIMEOUT_SECONDS)


class TimeoutHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout_seconds()
        self._read_deadline: TimerHandle | None = None
        self._headers_complete = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The idle timer uvicorn arms only after a response, armed from the start (data_received
        # cancels it, as it does after a response).
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Any byte between requests starts the next one (even bytes the parser skips, such as CRLFs).
        if self._read_deadline is None:
            self._start_read_deadline()
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_complete = False
        # A pipelined request begins inside the data that ended the previous one.
        if self._read_deadline is None:
            self._start_read_deadline()

    def on_headers_complete(self) -> None:
        self._headers_complete = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_read_deadline()
        super().on_message_complete()

    def _start_read_deadline(self) -> None:
        self._read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.flow is not None and self.flow.read_paused:
            # uvicorn stopped reading (the app has not taken the body yet, or a pipelined request waits
            # for the one before): the client is not the slow one.
            self._start_read_deadline()
            return
        if self._headers_complete and self._awaiting_answer():
            self._answer_408()
        self.transport.close()

    def _awaiting_answer(self) -> bool:
        """Whether the request being read has no answer started yet (so a 408 may be sent)."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_started

    def _answer_408(self) -> None:
        request_id = str(uuid.uuid4())
        body = orjson.dumps(
            {
                "error": f"the request was not completed within {self.read_timeout:g} s",
                "request_id": request_id,
            }
        )
        self.scope.setdefault("extensions", {})[READ_TIMEOUT_EXTENSION] = {
            "request_id": request_id,
            "status": 408,
            "body": body,
        }
        content = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"x-request-id: " + request_id.encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
