"""Streaming straight from the runner to the client: the daemon hands over the client's socket.

On a small machine every token that goes runner → daemon → client wakes the daemon between two
decode steps, and its CPU comes out of llama.cpp's threads (measured: 0.2-0.4 ms a token, about 3%
of a step of the default model). For a plain NDJSON stream the daemon therefore sends the response
headers, passes the client's socket to the runner over a socket pair (SCM_RIGHTS), and the runner's
engine thread writes each chunk itself; the daemon writes the final line once the runner says it
has let go. The hand-over, step by step:

1. daemon → runner: `Submit` with `direct` (the model's name and the kind of lines);
2. runner → daemon: `Accepted` once the request is valid and a sequence is free, while the
   engine already works on it, else with its first output (before, any error still gets its own
   status: a request that waits past the queue timeout gets its 503); output waits in a buffer;
3. daemon: sends the headers, then the socket, tagged with N, over the hand-over channel
   (`olla.wire.handoff`);
4. runner: writes the buffered and all later chunks (non-blocking; a slow client's chunks wait in
   the buffer, flushed by the event loop, never by the engine thread);
5. runner → daemon: exactly one last message for N once it holds no descriptor of the socket:
   `Done` (every chunk written), or a `Failure` (status 499 when the client went away or the
   daemon cancelled).

Two rare cases are not recovered: a runner that dies while part of a chunk is still unsent
leaves the chunk broken before the daemon's error line, and a runner that does not answer a
cancel within 5 s (runner_client._RELEASE_WAIT) is written past.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time
from collections.abc import Callable

from olla.errors import Interrupted
from olla.stream.encoders import NDJSON
from olla.stream.ollama import chunk_line
from olla.wire.messages import Direct, Done, Failure

CLIENT_GONE = "the client closed the connection"


class DirectStream:
    """One request's NDJSON stream, written by the runner into the client's socket as HTTP chunks.

    The engine thread calls `write` and `finish`; the event loop calls `attach` (the socket
    arrives), `abandon` (a cancel) and flushes what the client was too slow to take. `last`
    receives the request's one final message to the daemon, sent once no descriptor of the
    client's socket is left here. `broken` is called once if the client has gone.
    """

    def __init__(
        self,
        request_id: int,
        direct: Direct,
        loop: asyncio.AbstractEventLoop,
        last: Callable[[Done | Failure], None],
        broken: Callable[[], None],
    ) -> None:
        self.request_id = request_id
        self._direct = direct
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made by the event loop's thread
        self._last = last
        self._broken = broken
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pending = bytearray()
        self._watching = False  # the event loop waits to flush `_pending`
        self._final: Done | None = None
        self._ended = False
        self._marks: list[int] = []  # perf_counter_ns of each chunk, for the daemon's metrics

    @property
    def ended(self) -> bool:
        return self._ended

    def write(self, text: str) -> None:
        """Queue one chunk of text and send what the socket takes now (engine thread)."""
        data = NDJSON.line(chunk_line(self._direct.model, self._direct.kind, text))
        with self._lock:
            if self._ended:
                return
            self._marks.append(time.perf_counter_ns())
            self._pending += b"%x\r\n%b\r\n" % (len(data), data)
            gone = self._flush()
        if gone:
            self._broken()

    def finish(self, final: Done) -> None:
        """The request is done: `final` goes to the daemon once every chunk is out."""
        with self._lock:
            if self._ended:
                return
            self._final = dataclasses.replace(final, chunks_ns=tuple(self._marks))
            gone = self._flush()
        if gone:
            self._broken()

    def attach(self, sock: socket.socket) -> None:
        """The client's socket has arrived: send what waited for it (event loop)."""
        with self._lock:
            if self._ended:
                sock.close()
                return
            self._sock = sock
            gone = self._flush()
        if gone:
            self._broken()

    def fail(self, error: Failure) -> None:
        """End without writing more; `error` is the daemon's last message (once)."""
        with self._lock:
            if self._ended:
                return
            self._end(error)

    def abandon(self) -> None:
        """The daemon cancelled: let go of the socket, then tell it so."""
        self.fail(Failure(self.request_id, "cancelled", Interrupted.status, "Interrupted"))

    def _flush(self) -> bool:
        """Send what the socket takes; True if the client has gone (lock held)."""
        if self._sock is None or self._watching:
            return False
        while self._pending:
            try:
                sent = self._sock.send(self._pending, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except BlockingIOError:
                self._watching = True
                self._loop.call_soon_threadsafe(self._watch)
                return False
            except OSError:
                gone = Failure(self.request_id, CLIENT_GONE, Interrupted.status, "Interrupted")
                self._end(gone)
                return True
            del self._pending[:sent]
        if self._final is not None:
            self._end(self._final)
        return False

    def _watch(self) -> None:
        with self._lock:
            if self._sock is not None and not self._ended:
                self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._loop.remove_writer(self._sock.fileno())
            self._watching = False
            gone = self._flush()
        if gone:
            self._broken()

    def _end(self, message: Done | Failure) -> None:
        """Close our descriptor, then send the last message (lock held)."""
        self._ended = True
        self._pending.clear()
        sock, self._sock = self._sock, None
        if sock is not None and self._watching and threading.get_ident() != self._loop_thread:
            # the loop watches the descriptor: only it may stop watching and then close it
            self._loop.call_soon_threadsafe(self._close_watched, sock, message)
            return
        if sock is not None:
            if self._watching:
                self._loop.remove_writer(sock.fileno())
            sock.close()
        self._last(message)

    def _close_watched(self, sock: socket.socket, message: Done | Failure) -> None:
        self._loop.remove_writer(sock.fileno())
        sock.close()
        self._last(message)
