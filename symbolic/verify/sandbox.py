"""``bptt grade``'s sandbox: the graded file runs in a process of its own that holds nothing to cheat with.

The grading process (``symbolic.verify.grade._grade_in_child``) holds the exact derivation, the reference
gradients, the tolerances and the verdict. The graded file runs in a second process, started here,
that holds only the file and ``_DRIVER`` (a few dozen lines that import nothing of bptt): the driver
imports the file, calls its function with the inputs it is sent, and answers with plain numbers
(the loss and the gradients as float lists, or the name of what was returned instead). So a graded
function that reads its caller's frames finds the driver, one that patches ``symbolic.verify.grade`` patches
a copy nobody consults, and the verdict is computed from numbers alone: it cannot be written.

The two talk over the driver's stdin and stdout pipes, one frame each way per call (8 bytes of length,
then JSON). Before the file is imported the driver moves the pipes to private descriptors and points
its stdout at stderr and its stdin at /dev/null, so what the file prints never enters the channel. A
file that writes into the channel anyway is told apart from the driver's answer by validation (what
does not parse as the answer to the request just sent is refused, exit 2): at worst it sends numbers,
which it could have returned. The grading process reports each call to ``run_in_child``'s time limit
(``call_starts``); the driver dies with the grading process (PR_SET_PDEATHSIG) and is ended with every
process below it (``end_tree``) when the grading ends.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .child import call_returns, call_starts, end_tree, ended_message

#: A layer object as a forward/backward pair: its code runs in the driver (which imports nothing of bptt)
#: and, for ``grade_pair`` in this process, as the module itself.
LAYER = Path(__file__).with_name("layer_pair.py")
#: Largest answer accepted from the driver (a gradient of the graded sizes is a few kilobytes).
MAX_FRAME = 64 << 20
#: Values of a returned tuple looked at (the interface has at most a handful).
MAX_ITEMS = 64

_DRIVER = r'''
import json, os, sys


def main():
    parent = int(sys.argv[1])
    del sys.argv[1:]
    try:  # die with the grading process (Linux)
        import ctypes
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)
    except Exception:
        pass
    if os.getppid() != parent:
        os._exit(1)
    inbox, outbox = os.dup(0), os.dup(1)  # the channel, on descriptors of its own
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # the file's prints go to stderr
    request = receive(inbox)
    sys.path[:] = request["sys_path"]
    import numpy
    global np
    np = numpy
    function, answer = load(request["path"], request["function"], request["module"])
    functions = {request["function"]: function}
    if function is not None and request.get("layer"):  # a layer class: its forward and backward as a pair
        functions |= dict(zip(("layer.forward", "layer.backward"), layer_pair(function, **request["layer"])))
    if function is not None:
        module = sys.modules[request["module"]]
        answer["also"] = {}
        for name in request.get("also", []):
            value = getattr(module, name, None)
            functions[name] = value
            answer["also"][name] = describe(value) if hasattr(module, name) else None
    send(outbox, answer)
    while True:
        request = receive(inbox)
        if request is None:
            os._exit(0)
        send(outbox, call(functions.get(request.get("function"), function), request))


def receive(fd):
    head = read(fd, 8)
    if head is None:
        return None
    return json.loads(read(fd, int.from_bytes(head, "big")))


def read(fd, size):
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def send(fd, value):
    data = json.dumps(value).encode()
    data = len(data).to_bytes(8, "big") + data
    while data:
        data = data[os.write(fd, data):]


def first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def load(path, name, module_name):
    import importlib.util, inspect
    folder = os.path.dirname(os.path.abspath(path))
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        return None, {"error": "not_module"}
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, folder)  # its own imports of neighbouring files
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        return None, {"error": "syntax", "line": error.lineno, "message": str(error.msg)}
    except BaseException as error:
        return None, {"error": "import", "type": type(error).__name__, "message": first_line(error)}
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    functions = sorted(n for n, v in vars(module).items()
                       if inspect.isfunction(v) and v.__module__ == module_name and not n.startswith("_"))
    if not hasattr(module, name):
        return None, {"error": "missing", "functions": functions}
    function = getattr(module, name)
    return function, describe(function)


def describe(function):
    import inspect
    answer = {"callable": callable(function), "type": type(function).__name__, "signature": None}
    try:
        parameters = inspect.signature(function).parameters.values()
        answer["signature"] = [[p.name, int(p.kind), p.default is not p.empty] for p in parameters]
    except (TypeError, ValueError):
        pass
    return answer


KEPT = {}


def decode(value):
    if isinstance(value, dict) and "handle" in value:
        return KEPT[value["handle"]]
    if isinstance(value, dict) and "shape" in value:
        return np.array(value["data"], dtype=value.get("dtype", float)).reshape(value["shape"])
    if isinstance(value, dict):
        return {key: decode(item) for key, item in value["dict"].items()}
    return value


def call(function, request):
    first = [] if "positional" in request else [decode(request["x"]), decode(request["y"])]
    args = first + [decode(a) for a in request.get("positional", request.get("args", []))]
    kwargs = {k: decode(v) for k, v in request["kwargs"].items()}
    try:
        result = function(*args, **kwargs)
        keep = request.get("keep")
        if keep is not None and isinstance(result, (tuple, list)) and len(result) > keep:
            KEPT[len(KEPT)] = result[keep]  # a forward's cache stays here; the grader holds its number
            encoded = encode(result)
            encoded["items"][keep] = {"handle": len(KEPT) - 1}
            return {"result": encoded}
        return {"result": encode(result)}
    except SystemExit as error:
        code = error.code if isinstance(error.code, (int, str, type(None))) else repr(error.code)
        return {"exit": code}
    except BaseException as error:
        return {"raised": type(error).__name__, "message": first_line(error)}


def encode(value):
    if not isinstance(value, (tuple, list)):
        return {"other": type(value).__name__}
    return {"items": [item(v) for v in value[:64]], "count": len(value)}


def item(value):
    if isinstance(value, dict) or (hasattr(value, "keys") and not hasattr(value, "__array__")):
        try:
            keys = [k for k in list(value.keys())[:10000] if isinstance(k, str)]
            return {"mapping": {k: array(value[k]) for k in keys}, "type": type(value).__name__}
        except Exception:
            return {"other": type(value).__name__}
    return array(value)


def array(value):
    try:
        a = np.asarray(value)
        kind = a.dtype.kind
        if kind in "biuf":
            answer = {"array": a.astype(float).ravel().tolist(), "shape": list(a.shape)}
            if a.dtype.name in ("float16", "float32"):
                answer["dtype"] = a.dtype.name  # the precision it computed in, for the float32 diagnosis
            return answer
        if kind == "c":
            return {"array": a.real.astype(float).ravel().tolist(), "imag": a.imag.astype(float).ravel().tolist(),
                    "shape": list(a.shape)}
        return {"other": type(value).__name__, "dtype": str(a.dtype)}
    except Exception:
        return {"other": type(value).__name__}


%(layer)s

try:
    main()
except OSError:  # the channel closed: the grading process has stopped listening
    os._exit(0)
'''


def keep_private() -> None:
    """Linux: other processes of the same user (the sandbox) may not read this one's memory or open its
    descriptors through /proc, nor trace it (PR_SET_DUMPABLE 0; root still may)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # 4: PR_SET_DUMPABLE
        except (OSError, AttributeError):
            pass


class Opaque:
    """What the graded function returned that is not numbers: its type's name (and dtype) only."""

    def __init__(self, type_name: str, dtype: str | None = None):
        self.type_name, self.dtype = str(type_name)[:80], (str(dtype)[:40] if dtype else None)


class ChannelTampered(UsageError):
    """The driver's answer did not parse: the graded file wrote into the channel (or ended it)."""


class Sandbox:
    """The graded file's process. ``open()`` imports the file (its top-level code runs under the time
    limit) and returns the function as a callable proxy; ``close()`` ends the process and its own."""

    def __init__(self, path, function: str, wording, errors: dict, also: tuple = (), layer: dict | None = None):
        self.path, self.function, self.wording = Path(path), function, wording
        self.unusable = errors["FunctionUnusable"]
        self.process = None
        #: further functions of the file (a backward beside its forward): name → Remote, after open()
        self.also, self.others = tuple(also), {}
        #: for a layer class: {"forward", "backward", "grads_from", "names"} (``LAYER``)
        self.layer = layer

    def open(self):
        keep_private()  # the reference is computed in this process
        command = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c",
                   _DRIVER.replace("%(layer)s", LAYER.read_text(encoding="utf-8")), str(os.getpid())]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        module = "bptt_graded_" + __import__("hashlib").sha256(str(self.path.resolve()).encode()).hexdigest()[:16]
        call_starts("import")
        answer = self._exchange({"sys_path": sys.path, "path": str(self.path), "function": self.function,
                                 "module": module, "also": list(self.also), "layer": self.layer},
                                "its import (the top-level code)")
        call_returns()
        primary = self._function(answer)
        others = answer.get("also") if isinstance(answer.get("also"), dict) else {}
        for name in self.also:
            self.others[name] = self._function(others.get(name) or {"error": "missing", "functions": []}, name)
        return primary

    def close(self) -> None:
        if self.process is None:
            return
        end_tree(self.process.pid)  # first: once the channel closes it exits, and what it started is orphaned
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.process.wait()
        self.process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _function(self, answer: dict, name: str | None = None):
        path, name = self.path, name or self.function
        error = answer.get("error")
        if error == "not_module":
            raise UsageError(f"{path} cannot be imported as a Python module: give a .py file")
        if error == "syntax":
            raise UsageError(f"{path} has a syntax error at line {answer.get('line')}: {answer.get('message')}")
        if error == "import":
            raise UsageError(f"{path} fails on import ({answer.get('type')}: {answer.get('message')}): fix the file")
        if error == "missing":
            functions = [str(f) for f in answer.get("functions") or []]
            known = f" (it defines {', '.join(functions)})" if functions else ""
            kind, flag = self._flag(name)
            raise self.unusable(f"{path} has no {kind} {name}{known}: name the {kind} with {flag}")
        if not answer.get("callable"):
            raise self.unusable(f"{path}: {name} is {answer.get('type')}, not a {self._flag(name)[0]}")
        return Remote(self, name, _signature(answer.get("signature")))

    def _flag(self, name: str) -> tuple:
        """(what is missing, the flag that names it): a layer's class, a pair's forward or backward."""
        if self.layer:
            return "class", "--layer CLASS"
        if name != self.function:
            return "function", "--backward NAME"
        return "function", "--forward NAME" if self.also else "--function NAME"

    def call_positional(self, name: str, args, keep: int | None = None):
        """One call of ``name`` with these arguments (``Handle``s for kept values); ``keep``: the index of
        a returned item that stays in the sandbox (a cache), returned as a ``Handle``."""
        request = {"function": name, "positional": [_encode(a) for a in args], "kwargs": {}, "keep": keep}
        return self._answer(self._exchange(request, name))

    def call(self, x, y, args, kwargs):
        """One call of the graded function: what it returned (numbers, dicts of them, ``Opaque``), or
        the exception it raised, re-raised here by name."""
        request = {"x": _encode(x), "y": _encode(y), "args": [_encode(a) for a in args],
                   "kwargs": {k: _encode(v) for k, v in kwargs.items()}}
        return self._answer(self._exchange(request, self.function))

    def _answer(self, answer: dict):
        if "exit" in answer:
            raise SystemExit(answer["exit"])
        if "raised" in answer:
            kind = str(answer["raised"])
            kind = kind if kind.isidentifier() else "Exception"
            raise type(kind, (Exception,), {})(str(answer.get("message", "")))
        if "result" not in answer:
            raise self._tampered()
        return _decode_result(answer["result"], self._tampered)

    def _exchange(self, request: dict, during: str) -> dict:
        data = json.dumps(request).encode()
        try:
            self.process.stdin.write(len(data).to_bytes(8, "big") + data)
            self.process.stdin.flush()
            head = self.process.stdout.read(8)
            size = int.from_bytes(head, "big") if len(head) == 8 else None
            if size is not None and size > MAX_FRAME:
                raise self._tampered()
            body = self.process.stdout.read(size) if size is not None else b""
        except (BrokenPipeError, ConnectionResetError):
            head, body, size = b"", b"", None
        if size is None or len(body) != size:
            self._gone(during)
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise self._tampered() from None
        if not isinstance(answer, dict):
            raise self._tampered()
        return answer

    def _gone(self, during: str):
        """The channel ended before an answer: the process exited, was killed, or closed it."""
        try:
            status = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise self._tampered() from None
        raise ChildGone(ended_message(self.path, status, during, self.wording))

    def _tampered(self) -> UsageError:
        return ChannelTampered(
            f"{self.path} wrote into bptt grade's channel to the process that calls {self.function} (what came "
            "back is not the answer to the call): a graded file must return its values, not write to file "
            "descriptors it inherits"
        )


class ChildGone(UsageError):
    """The graded file's process ended during a call (the message says how)."""


class Remote:
    """The graded function as the grading process sees it: its name, its signature, and a call."""

    def __init__(self, sandbox: Sandbox, name: str, signature):
        self._sandbox, self.__name__ = sandbox, name
        if signature is not None:
            self.__signature__ = signature

    def __call__(self, x, y, *args, **kwargs):
        return self._sandbox.call(x, y, args, kwargs)


def _signature(parameters):
    """The function's signature rebuilt from (name, kind, has a default) triples; None when unknown."""
    if not isinstance(parameters, list):
        return None
    try:
        return inspect.Signature([
            inspect.Parameter(str(name), inspect._ParameterKind(int(kind)),
                              default=None if has_default else inspect.Parameter.empty)
            for name, kind, has_default in parameters
        ])
    except (TypeError, ValueError):
        return None


class Handle:
    """A value that stays in the sandbox (a forward's cache), known here by its number."""

    def __init__(self, number: int):
        self.number = number


def _encode(value):
    if isinstance(value, Handle):
        return {"handle": value.number}
    if isinstance(value, dict):
        return {"dict": {str(k): _encode(v) for k, v in value.items()}}
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":  # class indices stay integers
        return {"data": value.astype(np.int64).ravel().tolist(), "shape": list(value.shape), "dtype": "int64"}
    if isinstance(value, np.ndarray):
        return {"data": value.astype(float).ravel().tolist(), "shape": list(value.shape)}
    return float(value)


def _decode_result(result, tampered):
    """The driver's description of a return value → a tuple of arrays, dicts of arrays and ``Opaque``."""
    if not isinstance(result, dict):
        raise tampered()
    if "other" in result:
        return Opaque(result["other"])
    items = result.get("items")
    count = result.get("count")
    if not isinstance(items, list) or type(count) is not int or not len(items) <= count:
        raise tampered()
    values = [_decode_item(item, tampered) for item in items]
    return tuple(values + [Opaque("object")] * min(count - len(values), MAX_ITEMS))


def _decode_item(item, tampered):
    if not isinstance(item, dict):
        raise tampered()
    if "other" in item:
        return Opaque(item["other"], item.get("dtype"))
    if "handle" in item:
        if type(item["handle"]) is not int:
            raise tampered()
        return Handle(item["handle"])
    if "mapping" in item:
        if not isinstance(item["mapping"], dict):
            raise tampered()
        return {str(k): _decode_item(v, tampered) for k, v in item["mapping"].items()}
    shape, data = item.get("shape"), item.get("array")
    if (not isinstance(shape, list) or len(shape) > 32 or not all(type(s) is int and s >= 0 for s in shape)
            or not isinstance(data, list) or len(data) != int(np.prod(shape, dtype=np.int64))):
        raise tampered()
    parts = [data] + ([item["imag"]] if "imag" in item else [])
    if not all(isinstance(p, list) and len(p) == len(data) and all(type(v) in (float, int) for v in p) for p in parts):
        raise tampered()
    array = np.array(parts[0], dtype=float)
    if len(parts) > 1:
        array = array + 1j * np.array(parts[1], dtype=float)
    # float32 values are exact in float64: cast back, so the grader sees the precision computed in
    return array.reshape(shape).astype(item["dtype"]) if item.get("dtype") in ("float16", "float32") else (
        array.reshape(shape))


__all__ = ["ChannelTampered", "ChildGone", "Handle", "Opaque", "Remote", "Sandbox"]
