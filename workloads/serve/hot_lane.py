"""The model server's HTTP protocol: uvicorn's, with the deadlines of http_timeouts.py, plus a hot lane.

The hot lane answers GET /ping and small POST /invocations inside the parser's callbacks, with the
model server's own synchronous code (ModelServer.route, read_head, read, score: the same the ASGI app
runs), and writes each answer with one socket write. Everything else takes uvicorn's ASGI path
unchanged: other paths and methods, bodies over OFFLOAD_BYTES or the body limit, chunked bodies,
`Expect: 100-continue`, a request behind one still answered the ASGI way, a client not reading.

Why: on this 2-core machine uvicorn's per-request machinery (a scope, a task, an event, two send
messages, two socket writes) costs about as much as parsing, scoring and encoding a single row. And
when the build found that the model's graph scores rows together with the bits it gives each alone
(metadata serving_check["batch_invariant"]: tree ensembles), the requests that arrive together (one
read of the sockets by the event loop) are scored in one onnxruntime call, which costs little more
than one row; each still gets its own answer, in the order its connection sent it.

Ordering: a connection's answers always leave in request order. A request that must take the ASGI
path while answers of the same connection still wait in the batch first sends those answers.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from workloads.serve import serve
from workloads.serve.http_timeouts import TimeoutHttpToolsProtocol
from workloads.serve.serve import Answer, ModelServer, Scoring

log = logging.getLogger("workloads.serve")

_PING = b"/ping"
_INVOCATIONS = b"/invocations"
# A body at most this big is read in the lane; its answer is then small enough to write at once.
_SMALL = serve.OFFLOAD_BYTES
# A connection's answers that may wait in the batch at once: a few answers' worth of memory (one of up to
# 64 KiB of rows can be about 300 KiB of answer) for a client that pipelines and does not read.
_MAX_WAITING = 8
# Above this, head and body are handed to the transport as two buffers (one writev) instead of joined.
_JOIN_BYTES = 16 * 1024


class _Batch:
    """One per model server (process): answers waiting for the end of this turn of the event loop.

    Items are (protocol, Scoring or Answer, keep_alive) in arrival order. A Scoring waits to be scored
    with the others; an Answer (an error, /ping) waits only behind an earlier answer of its connection.
    """

    def __init__(self, server: ModelServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self.loop = loop
        self.items: list[tuple[HotLaneProtocol, Scoring | Answer, bool]] = []
        self.scheduled = False

    def add(self, protocol: HotLaneProtocol, item: Scoring | Answer, keep_alive: bool) -> None:
        self.items.append((protocol, item, keep_alive))
        protocol.waiting += 1
        if not self.scheduled:
            self.scheduled = True
            # After every connection the loop found readable in this turn has been parsed.
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        items, self.items = self.items, []
        if not items:
            return
        scorings = [item for _, item, _ in items if isinstance(item, Scoring)]
        scored = iter(self.server.score(scorings) if scorings else [])
        for protocol, item, keep_alive in items:
            answer = next(scored) if isinstance(item, Scoring) else item
            protocol.waiting -= 1
            try:
                protocol.write_answer(answer, keep_alive)
            except Exception:  # a fault here: that connection is closed, the others still answered
                log.exception("writing an answer failed")
                protocol.transport.close()


_batches: weakref.WeakKeyDictionary[ModelServer, _Batch] = weakref.WeakKeyDictionary()


def _batch_for(server: ModelServer, loop: asyncio.AbstractEventLoop) -> _Batch:
    batch = _batches.get(server)
    if batch is None or batch.loop is not loop:
        batch = _batches[server] = _Batch(server, loop)
    return batch


class HotLaneProtocol(TimeoutHttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The lane needs the model server itself; an app wrapped by middleware (proxy headers, trace
        # logging) keeps every request on the ASGI path.
        self.model_server: ModelServer | None = self.app if isinstance(self.app, ModelServer) else None
        self.in_lane = False
        self._lane_keep_alive = True
        self._lane_body: list[bytes] = []
        self.waiting = 0  # this connection's answers waiting in the batch
        self._reading_paused_for_answers = False
        self._close_when_answered = False

    # -- parser callbacks ----------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        server = self.model_server
        if server is not None and self._takes_lane():
            self._headers_complete = True
            self.in_lane = True
            self._lane_body = []
            # An answer earlier in this read armed the keep-alive timer; a request is in flight now.
            self._unset_keepalive_if_required()
            return
        self.in_lane = False
        self._answer_waiting_now()
        # The flush (or an answer earlier in this read) armed it too: uvicorn's own path only cancels it
        # in data_received, so it would close the connection under this request.
        self._unset_keepalive_if_required()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.in_lane:
            self._lane_body.append(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.in_lane:
            super().on_message_complete()
            return
        self.in_lane = False
        self._stop_read_deadline()
        self._lane_request(b"".join(self._lane_body))
        self._lane_body = []

    # -- which requests take the lane ----------------------------------------------------------------

    def _takes_lane(self) -> bool:
        url = self.url
        if url != _PING and url != _INVOCATIONS:
            return False
        method = self.parser.get_method()
        if (method != b"POST" if url == _INVOCATIONS else method != b"GET") or self.expect_100_continue:
            return False
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.pipeline:
            return False  # behind a request answered the ASGI way: it keeps the order
        if self.waiting >= _MAX_WAITING:
            # A client pipelining more: the rest go the ASGI way, which reads them one at a time and
            # waits for a client that does not read its answers (they would pile up here otherwise).
            return False
        if self.flow.write_paused or self.limit_concurrency is not None or self.parser.should_upgrade():
            return False
        assert self.model_server is not None
        limit = min(_SMALL, self.model_server.max_body_bytes)
        length = 0
        for name, value in self.headers:
            if name == b"content-length":
                if not value.isdigit():
                    return False
                length = int(value)
            elif name == b"transfer-encoding":
                return False
        if length > (limit if url == _INVOCATIONS else 0):
            return False
        self._lane_keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        return True

    # -- answering -----------------------------------------------------------------------------------

    def _lane_request(self, body: bytes) -> None:
        # An exception raised in a parser callback reaches uvicorn as a parse error (a 400 "Invalid
        # HTTP request received"): a fault of ours is a 500, logged, and the connection closed after it.
        try:
            self._answer_lane_request(body)
        except Exception:
            log.exception("answering a request failed")
            self._deliver(serve.error_answer(500, "internal error while answering the request"), False)

    def _answer_lane_request(self, body: bytes) -> None:
        server = self.model_server
        assert server is not None
        extra = serve.request_id_headers(self.headers)
        keep_alive = self._lane_keep_alive
        item: Scoring | Answer
        if self.url == _PING:
            item = server.route("GET", "/ping", extra)
        else:
            try:
                head = server.read_head(self.headers)
            except serve.codec.RequestError as exc:
                item = serve.error_answer(exc.status, exc.message, extra)
            else:
                with serve._collector_paused:
                    item = server.read(head, body, extra)
                if isinstance(item, Scoring) and not item.model.batches:
                    item = server.score([item])[0]
        self._deliver(item, keep_alive)

    def _deliver(self, item: Scoring | Answer, keep_alive: bool) -> None:
        """An answer now, unless answers of this connection wait (it keeps their order); a Scoring
        joins the batch."""
        if isinstance(item, Answer) and not self.waiting:
            self.write_answer(item, keep_alive)
        else:
            assert self.model_server is not None
            _batch_for(self.model_server, self.loop).add(self, item, keep_alive)

    def write_answer(self, answer: Answer, keep_alive: bool) -> None:
        transport = self.transport
        if transport.is_closing():
            return  # the client went away while its answer waited
        head = [STATUS_LINE[answer.status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        for name, value in answer.headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend([b"content-length: ", str(len(answer.body)).encode(), b"\r\n"])
        close = not keep_alive or (self._close_when_answered and not self.waiting)
        if close:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if len(answer.body) > _JOIN_BYTES:
            transport.writelines([b"".join(head), answer.body])
        else:
            head.append(answer.body)
            transport.write(b"".join(head))
        if close:
            transport.close()
        # uvicorn's own bookkeeping after a response: the request count, reading resumed, and the
        # keep-alive timer armed (or the connection left to close).
        self.on_response_complete()
        if self.flow.write_paused and not transport.is_closing():
            # A client that sends but does not read: read no more of its requests until it has taken
            # these answers (resume_writing), as uvicorn's own path waits for the drain.
            self._reading_paused_for_answers = True
            self.flow.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._reading_paused_for_answers:
            self._reading_paused_for_answers = False
            self.flow.resume_reading()

    def _answer_waiting_now(self) -> None:
        """Send this connection's waiting answers (with everyone's: they are all complete) before
        anything else is written on it."""
        if self.waiting and self.model_server is not None:
            _batch_for(self.model_server, self.loop).flush()

    # -- uvicorn's hooks, kept in order with the lane --------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._answer_waiting_now()
        super().send_400_response(msg)

    def shutdown(self) -> None:
        # A graceful shutdown closes idle connections at once; a request in the lane, or an answer
        # still waiting, is answered first (with `connection: close`), as uvicorn does for its own.
        if self.in_lane or self.waiting:
            self._close_when_answered = True
            self._lane_keep_alive = False
            return
        super().shutdown()

    def _awaiting_answer(self) -> bool:
        return self.in_lane or super()._awaiting_answer()
