"""One known-harmless line of Ray's, kept off the terminal of a `tng` run.

Every Ray Data actor pool makes the driver's Ray core log, once per process, at error level:

    [... E ...] core_worker.cc:NNNN: Actor with class name: 'MapWorker(MapBatches(CompressActor))' and
    ID: '...' has constructor arguments in the object store and max_restarts > 0. If the arguments ...
    See https://github.com/ray-project/ray/issues/53727 for more details.

The arguments are Ray Data's own: its actor pool `ray.put`s the operator's map transformer and the
DataContext and passes their refs to every actor it starts, whatever our UDF's constructor takes
(ray-project/ray#57733). The driver owns those objects and holds them for the whole run, so a
restarted actor finds them; what the line warns about is objects lost before a restart, which needs
the driver gone, and then the run is over anyway. Actor restarts are kept (a lost node's actors come
back: tests/test_pipeline_cluster.py), so the line is not fixable from here, and a newcomer reads it
as a failure.

The C++ core writes it to file descriptor 2 directly, out of reach of Python's logging and
warnings, and Ray has no setting for one message: `filtered_stderr()` puts a pipe in front of fd 2
for the duration of a command and forwards everything else as it arrives. When stderr is a terminal
the pipe is a pseudo-terminal of the same size, so that whoever asks still finds a terminal there
(progress bars are drawn on terminals only). The line still goes to the driver's log file in Ray's
session folder. Only the CLI uses this: the process's stderr is its to arrange, not a library's.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import termios
import threading
from typing import Iterator

NOISE = re.compile(rb"\[[^\]\n]*\] core_worker\.cc:\d+: Actor with class name: [^\n]* has constructor arguments "
                   rb"in the object store and max_restarts > 0\.[^\n]*\n")
# the start of a Ray core log line ("[2026-12-01 01:25:14,460 E 10314 10314] ..."), to hold back until
# its end arrives when a read ends inside one
LOG_LINE_START = re.compile(rb"\[\d{4}-\d\d-\d\d [^\n]*\Z")


def split_for_forwarding(buffer: bytes) -> tuple[bytes, bytes]:
    """(what can be written now with the noise taken out, what to hold until more arrives). Complete
    lines go now; an unfinished one too, unless it may be a Ray core log line (held to its newline)."""
    end = buffer.rfind(b"\n") + 1
    done, rest = buffer[:end], buffer[end:]
    held = LOG_LINE_START.search(rest)
    if held:
        done, rest = done + rest[:held.start()], rest[held.start():]
    else:
        done, rest = buffer, b""
    return NOISE.sub(b"", done), rest


def _forward(source: int, target: int) -> None:
    pending = b""
    try:
        while chunk := os.read(source, 1 << 16):
            now, pending = split_for_forwarding(pending + chunk)
            _write_all(target, now)
        _write_all(target, NOISE.sub(b"", pending))
    except OSError:
        pass  # a pseudo-terminal ends so (EIO) once its last writer is closed; or the terminal went away
    finally:
        os.close(source)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """File descriptor 2 through a filter that drops NOISE, until the block ends; fd 1 as well when it
    is the same file (a terminal, `2>&1`), so that the two keep their order. Does nothing when
    sys.stderr is not file descriptor 2 (e.g. captured by a test)."""
    try:
        if sys.stderr.fileno() != 2:
            raise ValueError
    except (AttributeError, OSError, ValueError):
        yield
        return
    routed = [2, 1] if _same_file(1, 2) else [2]
    _flush(sys.stdout, sys.stderr)
    saved = {fd: os.dup(fd) for fd in routed}
    read_end, write_end = _pipe_like(saved[2])
    for fd in routed:
        os.dup2(write_end, fd)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, saved[2]), name="tng-stderr", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        _flush(sys.stdout, sys.stderr)
        for fd in routed:  # the pipe's last write ends close: the forwarder drains it and ends
            os.dup2(saved[fd], fd)
        forwarder.join(timeout=5)
        if 1 in saved:
            os.close(saved[1])
        if not forwarder.is_alive():  # else a child process holds a write end: the forwarder goes on
            os.close(saved[2])


def _same_file(a: int, b: int) -> bool:
    try:
        return os.path.samestat(os.fstat(a), os.fstat(b))
    except OSError:
        return False


def _flush(*streams) -> None:
    for stream in streams:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()


def _pipe_like(fd: int) -> tuple[int, int]:
    """(read end, write end): a pseudo-terminal of fd's size, output passed as written, when fd is a
    terminal; a pipe otherwise."""
    if not os.isatty(fd):
        return os.pipe()
    read_end, write_end = os.openpty()
    attrs = termios.tcgetattr(write_end)
    attrs[1] &= ~termios.OPOST  # no "\n" -> "\r\n": bytes arrive as they were written
    termios.tcsetattr(write_end, termios.TCSANOW, attrs)
    with contextlib.suppress(OSError):
        fcntl.ioctl(write_end, termios.TIOCSWINSZ, fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return read_end, write_end
