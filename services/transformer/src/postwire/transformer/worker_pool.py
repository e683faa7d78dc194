"""Worker processes that run :func:`~postwire.transformer.html_parts.transform_mime`, one message at a
time each.

Why our own pool rather than ``concurrent.futures.ProcessPoolExecutor``: a message that makes a worker run
too long must be stopped, and a message that kills a worker (a stack overflow in a native parser, an
allocation failure under the memory limit) must not take other messages with it. An executor cannot stop
one running task, does not say which worker runs which task, and fails every pending task when one worker
dies. Here each request takes an idle worker, talks to it over its own pipe and either gets the answer
within ``timeout_s`` or kills that worker; a worker that dies fails only the request it was running.
The parent's side of each pipe is read and written by the event loop (``_Worker.round_trip``). A
killed or dead worker is replaced in the background by a fresh one, which joins the idle workers once it
has imported the engines and transformed a warm-up message (so capacity dips by one for about a second).

Workers are started with "spawn" (gRPC's threads do not survive a fork), ignore SIGINT/SIGTERM (the server
drains first, then closes the pool) and, when ``memory_mb`` is set, run under ``RLIMIT_AS``: a message that
needs more memory fails in its worker (MemoryError, or an abort from native code) instead of growing the
pod until the kernel's OOM killer picks a victim.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import functools
import multiprocessing
import os
import pickle
import resource
import signal
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final, Literal

import structlog

from postwire.transformer import metrics
from postwire.transformer.cost import MAX_MESSAGE, Budget, NeedsWorker
from postwire.transformer.html_parts import MimeError, MimeTooComplex, TransformResult, transform_mime
from postwire.transformer.inline import CSS_INLINE, HtmlTooComplex, InlineError
from postwire.transformer.link_tracking import TrackingOptions
from postwire.transformer.template_tags import TemplateOptions

WARM_UP: Final = b"Content-Type: text/html\r\n\r\n<style>p{color:red}</style><p>warm</p>\r\n"
STACK_BYTES: Final = 256 * 1024 * 1024  # of the thread running jobs; reserved, used only as deep as needed
START_TIMEOUT_S: Final = 120.0  # a worker must import the engines and warm up within this
_RESPAWN_BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0)
_PR_SET_PDEATHSIG: Final = 1

log = structlog.get_logger(__name__)

# What a worker answers: ("ok", TransformResult) or (kind, message) for a refusal of this one message.
_Kind = Literal["ok", "limit", "invalid", "error"]
_Reply = tuple[_Kind, Any]
_Job = tuple[bytes, str, bool, "TrackingOptions | None", "TemplateOptions | None"]


class TransformFailed(Exception):
    """This message could not be transformed; ``kind`` says why: ``limit`` (it exceeds a limit: time,
    memory, size, nesting), ``invalid`` (not a message, or HTML that cannot be inlined) or ``error`` (a
    bug). The message text is safe to return to the client."""

    def __init__(self, kind: Literal["limit", "invalid", "error"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PoolClosed(RuntimeError):
    """The pool was closed (the service is stopping)."""


def _worker_main(conn: Connection, memory_mb: int, parent_pid: int) -> None:
    """A worker's whole life: limits, then jobs on a thread with a large stack until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent drains requests first, then closes the pool
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    os.environ["RUST_BACKTRACE"] = "0"  # css-inline out of memory: abort at once, no backtrace attempt
    if memory_mb:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    threading.stack_size(STACK_BYTES)  # css-inline recurses per nesting level (see inline.py)
    thread = threading.Thread(target=_serve, args=(conn,), name="transform")
    thread.start()
    thread.join()


def _serve(conn: Connection) -> None:
    transform_mime(WARM_UP, CSS_INLINE)
    conn.send(("ok", None))
    while True:
        try:
            mime, engine, inline_css, tracking, template = conn.recv()
        except EOFError:  # the parent closed the pipe: the pool is closing
            return
        conn.send(_run(mime, engine, inline_css, tracking, template))


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this worker when the server process dies (kill -9 included), so a worker busy with a
    long job does not outlive it. Best effort: without prctl the worker ends at its next pipe read. (The
    signal follows the *thread* that started the worker: the pool's process thread, which lives until the
    pool is closed.)"""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


def _run(
    mime: bytes,
    engine: str,
    inline_css: bool,
    tracking: TrackingOptions | None,
    template: TemplateOptions | None = None,
    budget: Budget | None = None,
) -> _Reply:
    """One job; exceptions become (kind, message) because arbitrary exceptions may not pickle. With a
    ``budget`` (in the server process), NeedsWorker propagates."""
    try:
        return "ok", transform_mime(
            mime, engine, inline_css=inline_css, tracking=tracking, budget=budget, template=template
        )
    except (MimeTooComplex, HtmlTooComplex) as exc:
        return "limit", str(exc)
    except (MimeError, InlineError) as exc:
        return "invalid", str(exc)
    except MemoryError:
        return "limit", "transforming the message needs more memory than a worker may use"
    except RecursionError:
        return "limit", "the message is nested too deeply to transform"
    except NeedsWorker:
        raise
    except Exception as exc:  # a bug: the parent logs it and answers INTERNAL
        return "error", f"{type(exc).__name__}: {exc}"


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    io: asyncio.Future[Any] | None = None  # the pipe call in flight (a start, a wait or a job), if any
    streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def round_trip(self, job: _Job) -> _Reply:
        """Send a job and wait for its reply, on the event loop. EOFError/OSError: the worker died.

        The worker reads and writes its end with multiprocessing's Connection; this end speaks the same
        framing (a signed 32-bit length, or -1 and a 64-bit one, then a pickle) over asyncio streams, so a
        job costs no thread hand-off in either direction (it cost as much CPU as the gRPC call itself)."""
        reader, writer = await self._streams()
        payload = pickle.dumps(job, pickle.HIGHEST_PROTOCOL)
        writer.write(_frame_header(len(payload)) + payload)
        await writer.drain()
        (size,) = _INT.unpack(await reader.readexactly(_INT.size))
        if size == -1:
            (size,) = _LONG.unpack(await reader.readexactly(_LONG.size))
        reply: _Reply = pickle.loads(await reader.readexactly(size))
        return reply

    async def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.streams is None:  # the pipe is a socket pair: a duplicate of our end, read by the loop
            sock = socket.socket(fileno=os.dup(self.conn.fileno()))
            self.streams = await asyncio.open_connection(sock=sock, limit=2**20)
        return self.streams

    def close_streams(self) -> None:
        if self.streams is not None:
            self.streams[1].close()

    def wait_ready(self) -> None:
        """Block until the worker has warmed up (in a thread); raises when it dies or takes too long."""
        if not self.conn.poll(START_TIMEOUT_S):
            raise TimeoutError(f"transform worker not ready within {START_TIMEOUT_S:.0f} s")
        self.conn.recv()  # EOFError when it died while starting


class WorkerPool:
    """``workers`` processes (0: one per CPU); a job running longer than ``timeout_s`` is stopped by killing
    its worker; ``memory_mb`` (0: no limit) caps each worker's address space. With ``in_process``, a
    css-inline message whose cost is bounded and small (:mod:`postwire.transformer.cost`) is transformed
    right here, on the event loop, and only the others go to a worker."""

    def __init__(
        self, workers: int = 0, *, timeout_s: float = 10.0, memory_mb: int = 0, in_process: bool = False
    ) -> None:
        self._size = workers or os.cpu_count() or 1
        self._timeout_s = timeout_s
        self._memory_mb = memory_mb
        self._in_process = in_process
        self._context = multiprocessing.get_context("spawn")
        # the blocking wait for a starting worker's warm-up (jobs themselves go over the event loop)
        self._io = ThreadPoolExecutor(self._size + 1, thread_name_prefix="transform-io")
        # starting and reaping processes, one at a time: a start forks and execs (not on the event loop),
        # and multiprocessing's bookkeeping of children is not made for concurrent starts
        self._procs = ThreadPoolExecutor(1, thread_name_prefix="transform-procs")
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()  # created and not yet killed
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False

    async def warm_up(self) -> None:
        """Start every worker and wait until each has imported the engines and transformed a warm-up
        message, so the first request does not pay for it. Raises when a worker cannot start."""
        if self._started:
            return
        self._started = True
        workers = await asyncio.gather(*(self._start_worker() for _ in range(self._size)))
        for worker in workers:
            self._idle.put_nowait(worker)

    async def transform(
        self,
        mime: bytes,
        engine: str,
        *,
        inline_css: bool = True,
        tracking: TrackingOptions | None = None,
        template: TemplateOptions | None = None,
    ) -> TransformResult:
        """Transform one message in a worker. Raises :class:`TransformFailed` when this message cannot be
        transformed (with the reason) and :class:`PoolClosed` once the pool is closed."""
        if self._closed:
            raise PoolClosed("the worker pool is closed")
        if self._in_process and engine == CSS_INLINE and len(mime) <= MAX_MESSAGE:
            try:
                reply = _run(mime, engine, inline_css, tracking, template, Budget())
            except NeedsWorker:
                pass
            else:
                metrics.RUNS.labels("in_process").inc()
                return _result(reply)
        metrics.RUNS.labels("worker").inc()
        await self.warm_up()
        worker = await self._idle.get()  # waiting for a free worker does not count against the timeout
        if self._closed:
            raise PoolClosed("the worker pool is closed")
        job: _Job = (mime, engine, inline_css, tracking, template)
        worker.io = asyncio.ensure_future(worker.round_trip(job))
        try:
            kind, value = await asyncio.wait_for(asyncio.shield(worker.io), self._timeout_s)
        except TimeoutError:
            self._retire(worker, "timeout")
            raise TransformFailed(
                "limit",
                f"transforming the message took longer than {self._timeout_s:g} s "
                "(POSTWIRE_TRANSFORM_TIMEOUT_S); its worker was stopped",
            ) from None
        except asyncio.CancelledError:  # the client gave up while the worker is busy for who knows how long
            self._retire(worker, "cancelled")
            raise
        except (EOFError, OSError):
            self._retire(worker, "died", worker.process.exitcode)
            raise TransformFailed(
                "limit",
                "the worker process died while transforming the message (it most likely needed more "
                "memory than POSTWIRE_TRANSFORM_MEMORY_MB allows or overflowed its stack)",
            ) from None
        worker.io = None
        self._idle.put_nowait(worker)
        return _result((kind, value))

    async def close(self) -> None:
        """Stop every worker and the background restarts (call it once requests have drained)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._procs, _nothing)  # a start still running in the thread is done
        for worker in list(self._workers):
            self._discard(worker)  # idle ones hold nothing; a busy one's request was cancelled already
        await loop.run_in_executor(None, functools.partial(self._io.shutdown, wait=True))
        await loop.run_in_executor(None, functools.partial(self._procs.shutdown, wait=True))

    async def _start_worker(self) -> _Worker:
        parent, child = self._context.Pipe()
        args = (child, self._memory_mb, os.getpid())
        process = self._context.Process(target=_worker_main, args=args, name="transform-worker", daemon=True)
        worker = _Worker(process, parent)
        self._workers.add(worker)  # from now on close() kills it, even if this task is cancelled
        loop = asyncio.get_running_loop()
        try:
            worker.io = loop.run_in_executor(self._procs, _start, process, child)
            await asyncio.shield(worker.io)
            worker.io = loop.run_in_executor(self._io, worker.wait_ready)
            await asyncio.shield(worker.io)
        except BaseException:
            self._discard(worker)
            raise
        worker.io = None
        return worker

    def _retire(self, worker: _Worker, reason: str, exitcode: int | None = None) -> None:
        """Kill a worker that is stuck, gone, or busy with an abandoned job, and start a replacement."""
        log.warning("transform worker replaced", reason=reason, pid=worker.process.pid, exitcode=exitcode)
        metrics.WORKER_RESTARTS.labels(reason).inc()
        self._discard(worker)
        if not self._closed:
            task = asyncio.get_running_loop().create_task(self._replace())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _discard(self, worker: _Worker) -> None:
        """Kill a worker and forget it. Its pipe is closed once no thread is blocked on it any more (the
        kill ends such a call with EOF; a start still running is waited for and then killed), and the
        process is reaped."""
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        _kill(worker.process)

        def release(io: asyncio.Future[Any] | None = None) -> None:
            if io is not None and not io.cancelled():
                io.exception()  # EOFError after the kill: expected, mark it seen
            _kill(worker.process)
            worker.close_streams()
            worker.conn.close()
            if worker.process.pid is not None:
                with contextlib.suppress(RuntimeError):  # closed: exit kills what is left
                    self._procs.submit(_reap, worker.process)

        if worker.io is None or worker.io.done():
            release(worker.io)
        else:
            worker.io.add_done_callback(release)

    async def _replace(self) -> None:
        """Start one worker, retrying with backoff; it joins the idle ones once ready."""
        attempt = 0
        while True:
            try:
                worker = await self._start_worker()
            except Exception as exc:
                delay = _RESPAWN_BACKOFF_S[min(attempt, len(_RESPAWN_BACKOFF_S) - 1)]
                log.error("transform worker failed to start", error=repr(exc), retry_in_s=delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            self._idle.put_nowait(worker)
            return


def _result(reply: _Reply) -> TransformResult:
    """The result of a job, or the TransformFailed its reply stands for."""
    kind, value = reply
    if kind == "ok":
        result: TransformResult = value
        return result
    if kind == "error":
        log.error("transform error", error=value)
        raise TransformFailed("error", "internal error while transforming the message")
    raise TransformFailed(kind, str(value))


_live: set[BaseProcess] = set()  # started and not yet reaped, for the exit hook below
_INT = struct.Struct("!i")  # multiprocessing.Connection's frame header
_LONG = struct.Struct("!Q")  # after a -1 header: the length of a frame over 2 GiB


def _frame_header(size: int) -> bytes:
    return _INT.pack(size) if size <= 0x7FFFFFFF else _INT.pack(-1) + _LONG.pack(size)


def _start(process: BaseProcess, child: Connection) -> None:
    try:
        process.start()
        _live.add(process)
    finally:
        child.close()  # the worker holds its own end: its death is an EOF on ours


def _kill(process: BaseProcess) -> None:
    """SIGKILL: a worker ignores SIGTERM, and a call stuck in native code ignores everything else."""
    if process.pid is not None:  # started (a start that has not run yet has nothing to kill)
        process.kill()


def _reap(process: BaseProcess) -> None:
    """Wait for a killed worker to exit, so it is not left a zombie."""
    process.join(10.0)
    if process.exitcode is not None:
        _live.discard(process)


def _nothing() -> None:
    pass


@atexit.register
def _kill_live() -> None:
    """Workers ignore SIGTERM, so multiprocessing's own exit hook (terminate, then join) would wait for them
    forever when a pool was never closed; this hook is registered later, so it runs first and kills them."""
    for process in list(_live):
        with contextlib.suppress(Exception):
            process.kill()
