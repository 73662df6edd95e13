"""A reader that left (a closed pipe, a hung-up terminal) is not an error."""

from __future__ import annotations

import errno
import io
import os
import signal
import time

import pytest

from trace_reclaim.commands.trace import sigterm_interrupts
from trace_reclaim.env import Environment, output_gone, silence


class Gone(io.StringIO):
    def __init__(self, err: OSError) -> None:
        super().__init__()
        self.err = err

    def write(self, s: str) -> int:
        raise self.err


@pytest.mark.parametrize("err", [BrokenPipeError(errno.EPIPE, "pipe"),
                                 OSError(errno.EIO, "hung up")])
def test_tell_is_quiet_when_nobody_reads(err):
    env = Environment(stdout=io.StringIO(), stderr=Gone(err))
    env.tell("error: x", "hint: y")
    env.warn("w")
    assert output_gone(err)


def test_other_write_errors_still_raise():
    env = Environment(stdout=io.StringIO(), stderr=Gone(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError):
        env.tell("x")
    assert not output_gone(OSError(errno.ENOSPC, "full"))


def test_silence_points_the_descriptor_at_dev_null(tmp_path):
    r, w = os.pipe()
    os.close(r)
    stream = os.fdopen(w, "w")
    with pytest.raises(BrokenPipeError):
        stream.write("x")
        stream.flush()
    silence(stream)
    stream.write("dropped")
    stream.flush()   # goes to /dev/null now
    stream.close()
    silence(io.StringIO())  # no descriptor: left alone


def test_sighup_interrupts_unless_ignored():
    old = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        with pytest.raises(KeyboardInterrupt):
            with sigterm_interrupts():
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(5)  # the handler raises first
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
        signal.signal(signal.SIGHUP, signal.SIG_IGN)   # nohup
        with sigterm_interrupts():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)
