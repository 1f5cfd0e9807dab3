"""Calls that may hang or crash in native code, run in a child process with a time bound.

A decoder that spins or waits forever inside FFmpeg or decord holds the GIL or sits in a system
call, so nothing in its own process can stop it, and a decoder that crashes takes its process
with it (Ray would then retry the task forever: Ray Data retries a task whose worker died). So a
worker hands such calls to one long-lived child process of its own and waits for the answer at
most ``timeout`` seconds; past that the child is killed and the call fails with ``CallTimedOut``,
and a child that dies mid-call fails it with ``ChildDied`` naming the signal. The next call starts
a new child. The caller turns either into a failure of its window or file, named in the manifest.

    bounded_call(fn, *args, timeout=s)   fn(*args) in this process's child (in-process when timeout <= 0)
    child_pid() / shutdown()             the child's pid while it runs; kill it

The child is a plain ``python`` (no Ray) that imports what the pickled call needs once and keeps
its module state between calls (e.g. ``pipelines.media.containers``' open containers); it dies
with its parent (PR_SET_PDEATHSIG, every child being started from one thread that lives as long
as the process; a thread of its own also watches the parent) or when the parent closes the socket. A call interrupted in the caller (a cancelled
task) closes the child, so its late answer never reaches the next call; calls from several
threads take turns.

May import: nothing of the project.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable

_HEADER = struct.Struct("!Q")
# A new child's start (the interpreter, then the called function's module and its imports), bounded apart
# from the call: on a loaded node importing the decoding stack takes seconds.
STARTUP_SECONDS = 300.0
_PR_SET_PDEATHSIG = 1


class CallTimedOut(RuntimeError):
    """The call did not finish within its bound; its process was killed."""


class ChildDied(RuntimeError):
    """The child process died during the call (a crash, or a kill from outside: ``signal`` says which, when
    a signal ended it), or could not be started."""

    def __init__(self, message: str, signal_number: int | None = None):
        super().__init__(message)
        self.signal = signal_number

    def __reduce__(self):
        return (ChildDied, (str(self), self.signal))


def _send_blob(sock: socket.socket, blob: bytes) -> None:
    sock.sendall(_HEADER.pack(len(blob)))
    sock.sendall(blob)


def _receive_exactly(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, left = [], size
    while left:
        if deadline is not None:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(sock: socket.socket, deadline: float | None = None) -> Any:
    (size,) = _HEADER.unpack(_receive_exactly(sock, _HEADER.size, deadline))
    return pickle.loads(_receive_exactly(sock, size, deadline))


def _signal_name(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


class IsolatedProcess:
    """One child Python process that runs the calls sent to it, one at a time."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        parent, child = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        command = [sys.executable, "-c", f"from {__name__} import serve; serve({child.fileno()}, {os.getpid()})"]
        try:
            self._process = _SPAWNER.popen(command, pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
                                           close_fds=True)
            self._sock = parent
        except OSError as exc:  # no processes or memory left (EAGAIN, ENOMEM), too many open files
            parent.close()
            raise ChildDied(f"could not start its process ({exc.strerror or exc})") from None
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def call(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """``fn(*args)`` in the child; its exception is raised here. ``CallTimedOut`` after ``timeout`` s,
        ``ChildDied`` when the child dies first. A new child first imports ``fn``'s module, within
        ``STARTUP_SECONDS`` of its own: start-up is not the call's time."""
        if not self._alive():
            self.close()
            self._start()
            try:
                self._exchange(_import, (fn.__module__,), STARTUP_SECONDS)
            except CallTimedOut:
                raise ChildDied(f"could not start its process within {STARTUP_SECONDS:g} s") from None
            except ImportError as exc:
                self.close()
                raise ChildDied(f"could not start its process ({type(exc).__name__}: {exc})") from None
        return self._exchange(fn, args, timeout)

    def _exchange(self, fn: Callable[..., Any], args: tuple, timeout: float) -> Any:
        blob = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)  # a call that cannot travel: raised here
        began = time.monotonic()
        try:
            self._sock.settimeout(None)
            _send_blob(self._sock, blob)
            ok, value = _receive(self._sock, began + timeout)
        except (socket.timeout, TimeoutError):
            self.close()
            raise CallTimedOut(f"did not finish within {timeout:g} s (its process was stopped)") from None
        except (EOFError, ConnectionError, OSError):
            code = self._wait_for_exit()
            self.close()
            number = -code if code is not None and code < 0 else None
            raise ChildDied(f"crashed (its process died: {_signal_name(code)})", number) from None
        except BaseException:  # interrupted mid-call (a cancelled task): its answer must not reach the next call
            self.close()
            raise
        if ok:
            return value
        raise value

    def _wait_for_exit(self) -> int | None:
        try:
            return self._process.wait(timeout=5) if self._process is not None else None
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        """Kill the child (if any) and forget it. A child that a SIGKILL cannot end at once (blocked in the
        kernel on a hung network file system) is left to end by itself, not waited for."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self._process = None


class _Spawner:
    """Starts every child from one thread that lives as long as the process: PR_SET_PDEATHSIG follows the
    thread that started a child, so a child started from a thread that ends (an actor's pool thread) would
    be killed with it, and one started without the signal would outlive a killed parent."""

    def __init__(self) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def popen(self, command: list[str], **options: Any) -> subprocess.Popen:
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="isolated-spawner", daemon=True)
                self._thread.start()
        answer: list = []
        done = threading.Event()
        self._requests.put((command, options, answer, done))
        done.wait()
        if isinstance(answer[0], BaseException):
            raise answer[0]
        return answer[0]

    def _serve(self) -> None:
        while True:
            command, options, answer, done = self._requests.get()
            try:
                answer.append(subprocess.Popen(command, **options))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                answer.append(exc)
            done.set()


_SPAWNER = _Spawner()
_CHILD: IsolatedProcess | None = None
_LOCK = threading.Lock()  # one call at a time on the child's socket (an actor may call from two threads)


def bounded_call(fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
    """``fn(*args)`` in this process's child with a bound of ``timeout`` seconds (see the module docstring);
    with ``timeout <= 0``, in this process with no bound."""
    global _CHILD
    if timeout <= 0:
        return fn(*args)
    with _LOCK:
        if _CHILD is None:
            _CHILD = IsolatedProcess()
        return _CHILD.call(fn, *args, timeout=timeout)


def shutdown() -> None:
    """Kill this process's child, if it has one (tests; a process's exit ends its child anyway); waits for a
    call in progress."""
    global _CHILD
    with _LOCK:
        if _CHILD is not None:
            _CHILD.close()
            _CHILD = None


def child_pid() -> int | None:
    """The pid of this process's child while it runs (tests and benchmarks that fault it on purpose; read
    without waiting for a call in progress)."""
    return _CHILD.pid if _CHILD is not None and _CHILD._alive() else None


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the closed socket ends the child instead
        pass


def _watch_parent(parent: int) -> None:
    """End the child once its parent is gone (it is then adopted by another process)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def serve(fd: int, parent: int) -> None:
    """The child's loop: receive (fn, args), send (True, result) or (False, exception), until the parent goes."""
    _die_with_parent()
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    sock = socket.socket(fileno=fd)
    while True:
        try:
            fn, args = _receive(sock)
        except (EOFError, ConnectionError, OSError):
            return
        try:
            answer = (True, fn(*args))
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            answer = (False, _portable(exc))
        try:
            blob = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - a result that cannot travel is the call's error
            failure = RuntimeError(f"the result of {getattr(fn, '__name__', fn)!r} cannot be sent back: {exc}")
            blob = pickle.dumps((False, failure))
        try:
            _send_blob(sock, blob)
        except (ConnectionError, OSError):
            return


def _import(module: str) -> None:
    importlib.import_module(module)


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling (some native libraries' exceptions do not), else a RuntimeError saying it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to round-trip
        return RuntimeError(f"{type(exc).__name__}: {exc}")
