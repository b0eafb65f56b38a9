"""A TCP proxy on loopback that delays every byte by a fixed time each way: a database "on another
machine" for the benchmarks and tests, without leaving this one.

    .venv/bin/python bench/latency_proxy.py --target 127.0.0.1:5432 --delay-ms 5 [--port 0]

Each direction of each connection is a queue of (due time, bytes): a chunk read at t is written at
t + delay, in order, and reading never waits for writing, so the link adds latency without
limiting throughput (as a long, fast cable would). `LatencyProxy` runs the same proxy on a thread
of the calling process; `stop()` drops every connection, as a network that goes away.

`round_trips` counts the times a client spoke after hearing from the server (or first, on a new
connection): each is one more wait of a round trip over the link, which is what a remote
database costs. Pipelined statements (sent together, their replies read together) count once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import threading
import time

CHUNK = 1 << 16


class LatencyProxy:
    """Forwards 127.0.0.1:`port` to `target`, `delay_s` late in each direction."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        delay_s: float,
        port: int = 0,
        cpus: set[int] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.port = port
        self.cpus = cpus  # the cores of the proxy's thread (None: the caller's)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.round_trips = 0

    def start(self) -> int:
        """Serve on a thread of this process; returns the port listened on."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        if self._server is None:
            raise RuntimeError("latency proxy did not start")
        return self.port

    def _serve(self, ready: threading.Event) -> None:
        if self.cpus is not None:
            os.sched_setaffinity(0, self.cpus)  # this thread only
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        """Close the listening socket and every connection, as a link that goes down."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        heard = [True]  # the server spoke last (a new connection counts as such)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, heard, True),
                self._pipe(up_reader, writer, heard, False),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # `stop`: the connection ends here, quietly
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        heard: list[bool],
        upstream: bool,
    ) -> None:
        """Copy one direction, each chunk `delay_s` after it was read."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                if not upstream:
                    heard[0] = True  # delivered: what the client sends next answers it
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if data and upstream:
                    self.round_trips += heard[0]
                    heard[0] = False
                queue.put_nowait((time.monotonic() + self.delay_s, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port to forward to")
    p.add_argument("--delay-ms", type=float, required=True, help="added each way")
    p.add_argument("--port", type=int, default=0, help="port to listen on. Defaults to a free one")
    a = p.parse_args()
    host, _, port = a.target.rpartition(":")
    proxy = LatencyProxy(host, int(port), a.delay_ms / 1e3, a.port)
    print(f"listening on 127.0.0.1:{proxy.start()}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    proxy.stop()


if __name__ == "__main__":
    main()
