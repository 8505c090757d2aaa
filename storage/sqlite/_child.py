"""The SQLite writer process's own side: the child's loop (see ``_process.py``).

Started as ``python -m storage.sqlite._child PATH JOURNAL SYNC TIMEOUT``
(the parent's module runs ``child_main`` here), with a ``SQLiteBackend`` of
its own on the same file. It reads frames from stdin and answers each on
stdout, in order; it never dies of a write: a command that cannot be
applied is isolated (``_isolate.apply_isolating``, issue #17), and any other
error of a batch is answered as the store's failure.
"""

from __future__ import annotations

import marshal
import pickle
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..model._errors import BackendUnavailableError, InvalidWriteError, StorageError
from . import _statements
from ._backend import SQLiteBackend
from ._pipe import _HEADER, APPLIED, APPLY, FAILED, OK, PLAN, RESUME, STALE, _frame

#: The writer process's multi-row statement sizes (see ``child_main``).
_CHILD_STATEMENT_SIZES: tuple[int, ...] = (16, 64, 256)


def _read_exactly(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    if len(data) < size:
        return None  # the parent closed the pipe (or died)
    return bytes(data)


class _Checkpointer:
    """Copies the WAL back into the database beside the writer (WAL mode).

    SQLite's own automatic checkpoint runs in the committing connection,
    inside its COMMIT, each time the WAL passes 1,000 pages: a batch of a few
    hundred task writes touches a few hundred pages, so every third or
    fourth commit stalled 10-30 ms (issue #5: half of scenario a's run). The
    writer's automatic checkpoint is off; this thread, with a connection of
    its own, runs a PASSIVE checkpoint (it never blocks the writer) after
    commits, at most every ``pause`` seconds, mostly outside the GIL.
    """

    def __init__(self, path: str, busy_timeout: float, pause: float = 0.02) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._pause = pause
        self._wanted = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="taskactors WAL checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self) -> None:
        self._wanted.set()

    def close(self) -> None:
        self._closed = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            while True:
                self._wanted.wait()
                if self._closed:
                    return
                self._wanted.clear()
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next commit tries again
                    print(f"taskactors WAL checkpoint failed: {exc}", file=sys.stderr)
                time.sleep(self._pause)
        finally:
            connection.close()


def _as_storage_error(exc: Exception, backend: SQLiteBackend) -> StorageError:
    """What crosses back for an error of the child: a StorageError as it is;
    a command's fault (issue #17) as InvalidWriteError (a plan's rows name
    no command: the parent applies its commands the long way, which
    isolates the one at fault); anything else as the store's failure."""
    if isinstance(exc, StorageError):
        return exc
    if backend.blames_command(exc):
        error = InvalidWriteError("batch", f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    return BackendUnavailableError(f"the SQLite writer process failed: {exc!r}")


def _pickled(value: object) -> bytes:
    try:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # an outcome that cannot cross: say so, do not die
        error = BackendUnavailableError(f"the SQLite writer process cannot send {value!r}: {exc!r}")
        return pickle.dumps(error, pickle.HIGHEST_PROTOCOL)


def _error_pickled(error: StorageError) -> bytes:
    """An error of the child, pickled; without its cause if the cause cannot cross."""
    try:
        return pickle.dumps(error, pickle.HIGHEST_PROTOCOL)
    except Exception:
        error.__cause__ = None
        return _pickled(error)


def child_main(argv: Sequence[str]) -> int:
    """The child: ``python -m storage.sqlite._child PATH JOURNAL SYNC TIMEOUT``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # No GIL to share here: more statements of fewer rows, each quick to
    # compile (the first batch of 4,096 new tasks waited 56 ms for it).
    _statements.STATEMENT_SIZES = _CHILD_STATEMENT_SIZES
    path, journal_mode, synchronous, busy_timeout = argv
    backend = SQLiteBackend(
        path, journal_mode=journal_mode, synchronous=synchronous, busy_timeout=float(busy_timeout)
    )
    backend.open()
    backend.child_started()
    checkpointer = None
    if backend.journal_mode == "wal":
        backend.set_autocheckpoint(0)
        checkpointer = _Checkpointer(path, backend.busy_timeout)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    refusing = False
    try:
        while True:
            header = _read_exactly(source, _HEADER)
            if header is None:
                return 0
            body = _read_exactly(source, int.from_bytes(header, "little"))
            if body is None:
                return 0
            kind, body = body[:1], body[1:]
            if kind == PLAN:
                if refusing:
                    reply = _frame(STALE, b"")
                else:
                    try:
                        written = backend.write_planned(marshal.loads(body))
                    except Exception as exc:
                        refusing = True
                        reply = _frame(FAILED, _error_pickled(_as_storage_error(exc, backend)))
                    else:
                        refusing = not written
                        reply = _frame(OK if written else STALE, b"")
                        if written and checkpointer is not None:
                            checkpointer.committed()
            elif kind == APPLY:
                commands, now = pickle.loads(body)
                try:
                    result: object = backend.apply_for_parent(commands, now)
                except Exception as exc:
                    result = _as_storage_error(exc, backend)
                if checkpointer is not None:
                    checkpointer.committed()
                reply = _frame(APPLIED, _pickled(result))
            elif kind == RESUME:
                refusing = False
                continue  # no reply
            else:
                print(f"taskactors SQLite writer: unknown frame {kind!r}", file=sys.stderr)
                return 2
            sink.write(reply)
            sink.flush()
    finally:
        if checkpointer is not None:
            checkpointer.close()
        backend.close()


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
