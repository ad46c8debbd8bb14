"""A user's file in a child process, one time limit per call (``bptt check``, ``bptt grade``).

``run_in_child`` calls one function of ours in a fresh interpreter; that function reports each call into
the user's file with ``call_starts`` / ``call_returns``, and the parent ends the child (and everything it
started) when one call outlives the time limit, when the child exits or crashes, or when the command is
signalled. Apart from ``symbolic.verify.check`` so that the checker, the sandbox (``symbolic.verify.sandbox``) and
the grader share it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import reprlib
import select
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UsageError

#: In ``run_in_child``'s child process: writes one byte as each call into the module starts ("i" import,
#: "p" init_params, "l" loss, "g" loss_and_grad, "f" a function the parent names, as bptt grade's graded
#: function) and "." as it returns, for the parent's time limit (``call_starts``, ``call_returns``).
_WATCH = None
_CALL_CODES = {"import": b"i", "init_params": b"p", "loss": b"l", "loss_and_grad": b"g", "function": b"f"}
_CALL_NAMES = {code[0]: name for name, code in _CALL_CODES.items()}
_DESCRIPTIONS = {"import": "its import (the top-level code)"}
#: ``bptt check --timeout`` (and grade's): seconds one call into the module (its import, init_params, loss,
#: loss_and_grad) may take. A Numba module compiles on its first call, which takes seconds, not minutes.
DEFAULT_TIMEOUT = 60.0


# -- a user's file in a child process, one time limit per call (bptt check, bptt grade) ---------------
#
# Why a child process: a module can hang (in Python or inside compiled code), call sys.exit or
# os._exit, crash the interpreter, or print. A signal-based alarm (SIGALRM) only interrupts Python
# bytecode, so a Numba kernel or a C call that never returns would never see it, and the module could
# install its own handler or catch the exception. A child process is ended by SIGKILL whatever it
# runs, its exit cannot end the command, and its stdout is pointed at stderr so the report (or the
# JSON) alone goes to stdout. The child reports each call's start and end as one byte on a pipe; the
# parent ends the child, its session and every process below it (the module's own children too) when
# one call has run longer than the limit, when the child answers, and on SIGINT, SIGTERM or SIGHUP;
# the child dies with the parent (PR_SET_PDEATHSIG) if the parent is killed outright. Plain subprocess, not multiprocessing: no fork of a process that holds BLAS threads,
# and the same on every start method.
#
# ``run_in_child`` is the mechanism, shared by ``bptt check`` (``_check_in_child``) and ``bptt grade``
# (``symbolic.verify.grade._grade_in_child``): the child calls one function of ours, which reports each call
# into the user's file with ``call_starts`` / ``call_returns``, and sends back what it returns (JSON).

# the calls into a user's file that only some commands make (bptt grade's cell file)
_CALL_CODES["cell"] = b"c"
_CALL_NAMES[ord("c")] = "cell"
_DESCRIPTIONS["cell"] = "the cell file (its top-level code)"
# bptt check's calls of a module's backward entry point and its states (check_vjp)
_CALL_CODES |= {"vjp": b"v", "states": b"s"}
_CALL_NAMES |= {ord("v"): "vjp", ord("s"): "states"}

_CHILD = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from symbolic.verify.child import _child; _child(*sys.argv[2:])"
)


@dataclass(frozen=True)
class Wording:
    """How ``run_in_child``'s messages name the command's work (check and grade word them apart)."""

    #: after "PATH: CALL did not return within N s, "
    stopped: str
    #: "PATH: {who} ended the {process} (exit status 3) during CALL: {must}"
    who: str
    process: str
    must: str
    #: what the child is doing between calls
    work: str
    #: the first line of a bug of ours in the child (its traceback follows)
    bug: str
    #: how progress lines on stderr name the command
    command: str = "bptt check"


CHECK_WORDING = Wording(
    stopped="so the check was stopped: fix the module, or if it is only slow (a Numba module compiles on its "
    "first call) raise --timeout",
    who="the module",
    process="checking process",
    must="a module to check must return from its calls",
    work="the check",
    bug="bptt check failed while checking the module:",
)


def call_starts(label: str) -> None:
    """In ``run_in_child``'s child: a call into the user's file starts (its time limit runs). ``label``:
    "import", "cell", "init_params", "loss", "loss_and_grad", or "function" (named by the parent's
    ``descriptions``). Does nothing outside a child."""
    if _WATCH is not None:
        _WATCH(_CALL_CODES[label])


def call_returns() -> None:
    """In ``run_in_child``'s child: the call into the user's file has returned."""
    if _WATCH is not None:
        _WATCH(b".")


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG), so a parent
    killed by a signal it cannot catch leaves no child running; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def _adopt_orphans() -> None:
    """Linux: processes orphaned below this one (a daemon's double fork) become its children
    (PR_SET_CHILD_SUBREAPER), so ``end_tree`` of this process still finds them."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # 36: PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            pass


def _proc_table() -> dict[int, tuple[int, int]] | None:
    """pid → (parent pid, session id) of every process, from /proc; None where there is no /proc."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    table = {}
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as file:
                stat = file.read().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":  # a zombie has ended already
            table[int(name)] = (int(fields[1]), int(fields[3]))
    return table


def _doomed(root: int, session: int | None) -> set[int] | None:
    """The processes below ``root`` (its descendants) and in ``session``, never this one."""
    table = _proc_table()
    if table is None:
        return None
    found = {root} if root in table else set()
    found |= {pid for pid, (_, sid) in table.items() if session is not None and sid == session}
    grew = True
    while grew:
        below = {pid for pid, (parent, _) in table.items() if parent in found} - found
        found |= below
        grew = bool(below)
    return found - {os.getpid()}


def end_tree(root: int, session: int | None = None) -> None:
    """SIGKILL ``root``, every process below it and every process of ``session``: first stopped
    (SIGSTOP), rescanned until no new one appears, so none forks a survivor in between."""
    stopped: set[int] = set()
    for _ in range(50):
        found = _doomed(root, session)
        if found is None:  # no /proc: the process group of a session leader is the best there is
            with _suppress_gone():
                os.killpg(session if session is not None else root, signal.SIGKILL)
            return
        new = found - stopped
        if not new:
            break
        for pid in new:
            with _suppress_gone():
                os.kill(pid, signal.SIGSTOP)
        stopped |= new
    for pid in stopped:
        with _suppress_gone():
            os.kill(pid, signal.SIGKILL)


class _suppress_gone:
    """Ignore a process that has ended meanwhile (or is not ours to signal)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError))


def ended_message(path, status: int, during: str, wording: Wording) -> str:
    """"PATH: the file ended the grading process (exit status 3) during CALL: …"."""
    how = f"exit status {status}"
    if status < 0 and -status in signal.valid_signals():
        how = f"killed by signal {signal.Signals(-status).name}"
    return f"{path}: {wording.who} ended the {wording.process} ({how}) during {during}: {wording.must}"


def _child(entry: str, fd: str, arguments: str, parent: str = "") -> None:
    """The child process of ``run_in_child``: call ``entry`` ("module:function") with ``arguments`` (a
    JSON list), send what it returns on ``fd``, exit."""
    global _WATCH
    if parent:
        die_with_parent(int(parent))
    _adopt_orphans()
    output = int(fd)
    os.set_inheritable(output, False)  # the module's own subprocesses must not hold the pipe open
    del sys.argv[1:]  # what our caller passed is none of the user's file's business

    def watch(code: bytes) -> None:
        os.write(output, code)

    _WATCH = watch
    try:
        module_name, function_name = entry.split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        payload = {"result": function(*json.loads(arguments))}
    except UsageError as error:
        payload = {"usage": str(error), "error": type(error).__name__}
    except KeyboardInterrupt:
        os._exit(130)
    except BaseException:  # noqa: BLE001 - a bug of ours: the parent shows the traceback
        payload = {"bug": traceback.format_exc()}
    data = json.dumps(payload).encode()
    end_tree(os.getpid())  # what the user's file started, orphans included, ends before the answer
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        with open(output, "wb", closefd=True) as pipe:
            pipe.write(b"R" + len(data).to_bytes(8, "big") + data)
    except OSError:  # the parent has stopped listening (it has an answer, or is ending us)
        os._exit(0)
    # no atexit handlers, no waiting for threads the module may have left running
    os._exit(0)


def _ended(process: subprocess.Popen) -> None:
    """Kill the child, everything below it and its whole session (it is a session leader), and reap it."""
    end_tree(process.pid, process.pid)
    if process.poll() is None:
        with _suppress_gone():
            process.kill()
    process.wait()


class _Signalled(BaseException):
    """SIGTERM or SIGHUP arrived while a child ran: unwind (the child is ended), then die of it."""

    def __init__(self, number: int):
        super().__init__(number)
        self.number = number


class _signals_end_children:
    """While a child runs, SIGTERM and SIGHUP end it (and what it started) before this process ends as
    the signal says; SIGINT does already (KeyboardInterrupt unwinds through ``_ended``)."""

    def __enter__(self):
        import threading

        self.previous = {}
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers
        for number in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(number) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
                self.previous[number] = signal.signal(number, self._handler)
        return self

    @staticmethod
    def _handler(number, frame):
        raise _Signalled(number)

    def __exit__(self, kind, error, trace):
        for number, old in self.previous.items():
            signal.signal(number, old)
        if isinstance(error, _Signalled):  # the child is ended by now: end as the signal says
            signal.raise_signal(error.number)
            raise UsageError(f"stopped by {signal.Signals(error.number).name}") from None
        return False


def run_in_child(entry: str, arguments: list, path: str, timeout: float, wording: Wording = CHECK_WORDING,
                 descriptions: Mapping[str, str] | None = None, errors: Mapping[str, type] | None = None):
    """Call ``entry`` ("module:function", of ours) with ``arguments`` (JSON values) in a child process and
    return what it returns (a JSON value).

    Each call into the user's file at ``path`` that the child reports (``call_starts``) must return
    within ``timeout`` seconds; the child's stdout goes to stderr. A ``UsageError`` in the child is
    raised here with its message (as the class ``errors`` maps its class name to, if any); a call that
    does not return in time, or a child that exits or is killed before it answers, is a ``UsageError``
    naming the call (``descriptions``: call label → how to name it). However it ends (a result, an
    error, SIGINT, SIGTERM, SIGHUP), the child and every process it started are killed first.
    """
    names = {**_DESCRIPTIONS, **(descriptions or {})}
    with _signals_end_children():
        payload = _watch_child(entry, arguments, path, timeout, wording, names)
    result = json.loads(bytes(payload[8 : 8 + int.from_bytes(payload[:8], "big")]))
    if "usage" in result:
        raise (errors or {}).get(result.get("error"), UsageError)(result["usage"])
    if "bug" in result:
        raise RuntimeError(f"{wording.bug}\n" + result["bug"])
    return result["result"]


#: A call into the user's file running this long gets one progress line on stderr (a Numba module
#: compiles its kernels on its first call, silently, for seconds).
SLOW_CALL = 2.0


def _announce_slow(call, started: float, announced: bool, timeout: float, wording: Wording, names) -> bool:
    """Print, once per command, that a call has run SLOW_CALL seconds; whether that line was printed."""
    if call is None or announced or time.monotonic() - started < SLOW_CALL:
        return announced
    print(f"{wording.command}: {names.get(call, call)} has run {SLOW_CALL:g} s (a Numba module compiles its "
          f"kernels on its first call; the limit is {timeout:g} s, --timeout)…", file=sys.stderr, flush=True)
    return True


def _watch_child(entry: str, arguments: list, path: str, timeout: float, wording: Wording, names: dict):
    """Start the child, time each call it reports, and return its answer (8 bytes of length, JSON)."""
    read_end, write_end = os.pipe()
    command = [
        sys.executable,
        *subprocess._args_from_interpreter_flags(),  # as multiprocessing does
        "-c",
        _CHILD,
        json.dumps(sys.path),
        entry,
        str(write_end),
        json.dumps(arguments),
        str(os.getpid()),
    ]
    try:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=2, pass_fds=(write_end,), start_new_session=True
        )
    finally:
        os.close(write_end)
    call, started, payload, announced = None, 0.0, None, False
    try:
        while not _complete(payload):
            announced = _announce_slow(call, started, announced, timeout, wording, names)
            waiting = 1.0 if call is None else max(0.0, min(1.0, started + timeout - time.monotonic()))
            ready, _, _ = select.select([read_end], [], [], waiting)
            chunk = os.read(read_end, 1 << 16) if ready else None
            if chunk == b"" or (chunk is None and process.poll() is not None):
                break  # the child has gone (every write end closed, or it exited)
            if chunk and payload is not None:
                payload += chunk
            elif chunk:
                marker = chunk.find(b"R")
                for code in chunk if marker < 0 else chunk[:marker]:
                    if code == ord("."):
                        call = None
                    elif code in _CALL_NAMES:
                        call, started = _CALL_NAMES[code], time.monotonic()
                if marker >= 0:
                    payload = bytearray(chunk[marker + 1 :])
            if call is not None and payload is None and time.monotonic() - started > timeout:
                raise UsageError(
                    f"{path}: {names.get(call, call)} did not return within {timeout:g} s, {wording.stopped}"
                )
        if not _complete(payload):
            during = names.get(call, call) if call else wording.work
            raise UsageError(ended_message(path, process.wait(), during, wording))
    finally:
        os.close(read_end)
        _exited(process, 5 if _complete(payload) else 0)
        _ended(process)
    return payload


def _exited(process: subprocess.Popen, seconds: float) -> None:
    """Wait up to ``seconds`` for the child to exit without reaping it: its pid (and session id) cannot
    be reused by an unrelated process before ``_ended`` has looked for what it left."""
    deadline = time.monotonic() + seconds
    while hasattr(os, "waitid"):
        try:
            if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return
        except ChildProcessError:
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def _complete(payload) -> bool:
    """Whether the child's result (8 bytes of length, then JSON) has arrived whole."""
    return (
        payload is not None and len(payload) >= 8 and len(payload) >= 8 + int.from_bytes(payload[:8], "big")
    )




# -- calling into a user's file ------------------------------------------------------------------------


def short(value, limit: int = 60) -> str:
    """A repr of anything the module holds, on one line and short."""
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = limit
    return " ".join(shortener.repr(value).split())


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def guarded_call(path, label: str, function, *args, **kwargs):
    """Call into the module at ``path`` under the time limit (``call_starts``); whatever it raises or
    exits with is one ``UsageError`` line."""
    call_starts(label)
    try:
        result = function(*args, **kwargs)
    except KeyboardInterrupt:
        raise
    except SystemExit as error:
        raise UsageError(
            f"{path}: {label} called sys.exit({short(error.code)}): a module to check must return "
            "its values, not exit"
        ) from None
    except BaseException as error:  # noqa: BLE001 - whatever the module raises is the user's file
        raise UsageError(f"{path}: {label} fails ({one_line(error)})") from None
    call_returns()
    return result


def time_limit(timeout) -> float:
    """``--timeout``, validated: a positive number of seconds."""
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        value = math.nan
    if not (0 < value < math.inf):
        raise UsageError(
            f"the time limit must be a positive number of seconds, got {timeout!r}: pass e.g. --timeout 60"
        )
    return value
