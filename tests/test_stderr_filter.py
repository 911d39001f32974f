"""jobs/stderr_filter.py: Ray core's line about actor constructor arguments is kept off a `tng` run's
stderr, and everything else passes, in order, as it was written."""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

from tng.jobs.stderr_filter import NOISE, _pipe_like, split_for_forwarding

ROOT = Path(__file__).resolve().parents[1]
# as Ray 2.60's driver writes it (one write, newline included)
RAY_LINE = (b"[2026-12-01 01:25:14,460 E 10314 10314] core_worker.cc:2465: Actor with class name: "
            b"'MapWorker(MapBatches(CompressActor))' and ID: '94c5baa09828494233358fab01000000' has constructor "
            b"arguments in the object store and max_restarts > 0. If the arguments in the object store go out of "
            b"scope or are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/53727 "
            b"for more details.\n")


def test_the_noise_pattern_is_that_line_only():
    assert NOISE.fullmatch(RAY_LINE)
    other_error = b"[2026-12-01 01:25:14,460 E 10314 10314] core_worker.cc:100: Failed to register actor.\n"
    assert not NOISE.search(other_error)
    assert not NOISE.search(RAY_LINE.replace(b"max_restarts > 0", b"max_restarts = 0"))


def test_split_drops_the_line_and_keeps_the_rest():
    assert split_for_forwarding(b"a\n" + RAY_LINE + b"b\n") == (b"a\nb\n", b"")
    # a progress bar redrawn without a newline goes at once, even after the line
    assert split_for_forwarding(b"\rRunning: 1 row [00:01]" + RAY_LINE + b"\rRunning: 2 rows") == (
        b"\rRunning: 1 row [00:01]\rRunning: 2 rows", b"")
    # a Ray log line not finished yet is held until its newline arrives
    done, held = split_for_forwarding(b"x\n" + RAY_LINE[:80])
    assert (done, held) == (b"x\n", RAY_LINE[:80])
    assert split_for_forwarding(held + RAY_LINE[80:]) == (b"", b"")


SCRIPT = textwrap.dedent("""
    import os, sys
    from tng.jobs.stderr_filter import filtered_stderr
    line = sys.stdin.buffer.read()
    print("before", file=sys.stderr, flush=True)
    with filtered_stderr():
        os.write(2, b"kept 1\\n" + line)
        os.write(2, line)  # alone, as Ray writes it
        print("kept 2", file=sys.stderr)
        os.write(2, b"no newline at the end")
    print("after", file=sys.stderr)
    """)


def test_the_line_never_reaches_stderr_and_nothing_else_is_lost():
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, input=RAY_LINE, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b"before\nkept 1\nkept 2\nno newline at the endafter\n"


def test_stdout_and_stderr_keep_their_order_when_they_are_one_file(tmp_path):
    script = textwrap.dedent("""
        import os, sys
        from tng.jobs.stderr_filter import filtered_stderr
        with filtered_stderr():
            for i in range(50):
                print(f"out {i}", flush=True)
                print(f"err {i}", file=sys.stderr, flush=True)
        """)
    with open(tmp_path / "both", "wb") as both:
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, stdout=both, stderr=both, timeout=60, check=True)
    expected = "".join(f"out {i}\nerr {i}\n" for i in range(50))
    assert (tmp_path / "both").read_text() == expected


def test_on_a_terminal_the_command_still_finds_a_terminal_of_the_same_size():
    terminal, other_side = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
    read_end, write_end = _pipe_like(terminal)
    try:
        assert os.isatty(write_end)
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(write_end, termios.TIOCGWINSZ, b"\0" * 8))
        assert (rows, cols) == (40, 123)
        os.write(write_end, b"a\nb")
        assert os.read(read_end, 100) == b"a\nb"  # passed as written: no "\r\n"
    finally:
        for fd in (terminal, other_side, read_end, write_end):
            os.close(fd)
