"""Bounded calls in a real child process: results and errors come back, a call past its bound is stopped, a
child that crashes (a real segfault) fails its call with the signal, and the next call gets a new child."""

from __future__ import annotations

import ctypes
import os
import threading
import time

import pytest

from pipelines.runtime import isolated
from pipelines.runtime.isolated import CallTimedOut, ChildDied, bounded_call

@pytest.fixture(autouse=True)
def fresh_child():
    isolated.shutdown()
    yield
    isolated.shutdown()

def test_results_and_errors_come_back_from_one_kept_child():
    first = bounded_call(os.getpid, timeout=30)
    assert first != os.getpid()
    assert bounded_call(os.getpid, timeout=30) == first  # the same child serves the next call
    assert bounded_call(sorted, [3, 1, 2], timeout=30) == [1, 2, 3]
    with pytest.raises(ValueError, match="invalid literal"):
        bounded_call(int, "x", timeout=30)
    assert bounded_call(os.getpid, timeout=0) == os.getpid()  # no bound: in this process

def test_a_call_past_its_bound_is_stopped_and_the_next_call_gets_a_new_child():
    before = bounded_call(os.getpid, timeout=30)
    began = time.monotonic()
    with pytest.raises(CallTimedOut, match="did not finish within 1 s"):
        bounded_call(time.sleep, 60, timeout=1)
    assert time.monotonic() - began < 10
    with pytest.raises(ProcessLookupError):
        os.kill(before, 0)  # the hung child is gone
    after = bounded_call(os.getpid, timeout=30)
    assert after not in (before, os.getpid())

def test_a_crashing_child_fails_its_call_with_the_signal():
    with pytest.raises(ChildDied, match="SIGSEGV"):
        bounded_call(ctypes.string_at, 0, timeout=30)  # reads address 0: a real segmentation fault
    assert bounded_call(sum, [1, 2], timeout=30) == 3

def test_a_child_killed_from_outside_mid_call_fails_that_call():
    bounded_call(os.getpid, timeout=30)
    pid = isolated.child_pid()
    assert pid is not None
    began = time.monotonic()
    with pytest.raises(ChildDied, match="SIGKILL"):

        threading.Timer(0.5, os.kill, (pid, 9)).start()
        bounded_call(time.sleep, 30, timeout=60)
    assert time.monotonic() - began < 10


def test_a_result_that_cannot_travel_is_the_calls_error():
    with pytest.raises(RuntimeError, match="cannot be sent back"):
        bounded_call(threading.Lock, timeout=30)
    assert bounded_call(sum, [1, 2], timeout=30) == 3


def test_a_call_interrupted_in_the_caller_never_hands_its_answer_to_the_next_call():
    """A cancelled task interrupts the caller while the child still works: the next call gets its own answer."""
    import signal

    class Cancelled(Exception):
        pass

    def cancel(signum, frame):
        raise Cancelled()

    previous = signal.signal(signal.SIGALRM, cancel)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Cancelled):
            bounded_call(time.sleep, 2, timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(2)  # the interrupted call would have answered by now
    assert bounded_call(sum, [1, 2], timeout=30) == 3
    assert bounded_call(sorted, [3, 1], timeout=30) == [1, 3]


def test_a_child_started_from_a_short_lived_thread_outlives_the_thread():
    """PR_SET_PDEATHSIG follows the thread that started the child: only the main thread asks for it."""
    first = []
    thread = threading.Thread(target=lambda: first.append(bounded_call(os.getpid, timeout=30)))
    thread.start()
    thread.join()
    time.sleep(0.5)
    assert bounded_call(os.getpid, timeout=30) == first[0]  # the same child, still alive
