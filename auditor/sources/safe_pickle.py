"""Pickles of numpy arrays (CIFAR's python batches) read without handing anything to numpy.

Unpickling a numpy array calls numpy's C constructors (``_reconstruct``, ``ndarray.__setstate__``,
``dtype.__setstate__``) with arguments from the file; a crafted dtype state (an object field with
the wrong flags) makes ``__setstate__`` copy raw bytes into object pointers, and the interpreter
dies with SIGSEGV. Here no global named in the file is ever called:

1. :func:`_prescan` walks the opcodes (``pickletools.genops``, which builds nothing) and refuses,
   before any object exists: text (protocol 0/1) pickles; opcodes that build objects of other
   kinds (``INST``, ``OBJ``, ``NEWOBJ``, extension codes, persistent ids, out-of-band buffers);
   integers wider than 64 bits; a memo index beyond the opcodes seen (CPython's unpickler grows
   its memo to twice the index: ``LONG_BINPUT 2**28`` costs 4 GiB); more than
   ``MAX_OPCODES + len/BYTES_PER_OPCODE`` opcodes (each makes at most one object, so memory stays
   within a small multiple of the file's size); and bytes after the pickle's end.
2. The standard unpickler then runs with a ``find_class`` that returns *stand-ins* for the five
   globals an array pickle names (numpy 1's ``numpy.core`` and numpy 2's ``numpy._core`` module
   names alike): they record their arguments and check them against the one layout accepted — a
   C-ordered array of unsigned bytes (dtype ``u1`` with numpy's plain state) whose raw bytes are
   exactly ``prod(shape)`` long. Every other global is refused. The stand-ins refuse ``BUILD`` on
   themselves, and each array or dtype takes its state once.

Accepted forms: ``_reconstruct(ndarray, (0,), b'b')`` then ``BUILD (1, shape, dtype, False, raw)``
(protocol 2 from Python 2 with bytes, from Python 3 with ``_codecs.encode(text, 'latin1')``;
protocols 3 and 4 with ``BINBYTES``), and ``_frombuffer(buffer, dtype, shape, 'C')`` (protocol 5).
The caller builds the array itself from :attr:`PickledArray.raw` (``np.frombuffer``).
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from typing import Any, NoReturn

from ..errors import AuditInputError, shown, shown_text

MAX_OPCODES = 4096
BYTES_PER_OPCODE = 256  # a CIFAR batch has 3 or 4 opcodes per 3072-byte image
MAX_DIMENSIONS = 32
# What binary pickles of dicts, lists, numbers, strings and numpy arrays are made of (protocols 2-5).
_ALLOWED_OPCODES = frozenset(
    {
        "PROTO",
        "FRAME",
        "STOP",
        "MARK",
        "POP",
        "POP_MARK",
        "EMPTY_DICT",
        "EMPTY_LIST",
        "EMPTY_TUPLE",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "SETITEM",
        "SETITEMS",
        "APPEND",
        "APPENDS",
        "NONE",
        "NEWTRUE",
        "NEWFALSE",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG1",
        "LONG4",
        "BINFLOAT",
        "SHORT_BINSTRING",
        "BINSTRING",
        "SHORT_BINBYTES",
        "BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "BINPUT",
        "LONG_BINPUT",
        "MEMOIZE",
        "BINGET",
        "LONG_BINGET",
        "GLOBAL",
        "STACK_GLOBAL",
        "REDUCE",
        "BUILD",
    }
)
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
    ("numpy.core.numeric", "_frombuffer"): "frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "frombuffer",
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",
}


class _Refused(pickle.UnpicklingError):
    """Raised from inside the unpickler; :func:`load_array_pickle` names the file."""


def _refuse(reason: str) -> NoReturn:
    raise _Refused(reason)


class PickledDtype:
    """A ``numpy.dtype('u1', False, True)`` and its state, recorded, never built."""

    __slots__ = ("built",)

    def __init__(self) -> None:
        self.built = False

    def __setstate__(self, state) -> None:
        if self.built:
            _refuse("a dtype's state is given twice")
        endian = state[1] if isinstance(state, tuple) and len(state) == 8 else None
        if endian not in ("|", b"|") or state[:1] + state[2:] != (3, None, None, None, -1, -1, 0):
            _refuse(f"the dtype's state {shown(state)} is not that of plain unsigned bytes")
        self.built = True


class PickledArray:
    """An array pickle's recorded shape and raw bytes, checked (C order, unsigned bytes, exact length)."""

    __slots__ = ("shape", "raw")

    def __init__(self, shape: tuple[int, ...] | None = None, raw: bytes | bytearray | None = None):
        self.shape, self.raw = shape, raw

    def __setstate__(self, state) -> None:
        if self.shape is not None:
            _refuse("an array's state is given twice")
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]  # (version, shape, dtype, is_fortran, raw); older numpy leaves out the version
        if not (isinstance(state, tuple) and len(state) == 4):
            _refuse(f"the array's state {shown(state)} is not (version, shape, dtype, is_fortran, raw)")
        shape, dtype, fortran, raw = state
        if fortran not in (False, 0):
            _refuse("Fortran-ordered arrays are not accepted")
        self.shape, self.raw = _checked_array(shape, dtype, raw)


def _checked_array(shape, dtype, raw) -> tuple[tuple[int, ...], bytes | bytearray]:
    if not (isinstance(shape, tuple) and len(shape) <= MAX_DIMENSIONS and all(_is_count(n) for n in shape)):
        _refuse(f"an array's shape {shown(shape)} is not a tuple of sizes")
    if not (isinstance(dtype, PickledDtype) and dtype.built):
        _refuse("an array's dtype is not numpy.dtype('u1') with numpy's state")
    if not isinstance(raw, (bytes, bytearray)) or len(raw) != math.prod(shape):
        _refuse(f"an array of shape {shape} has {len(raw) if isinstance(raw, (bytes, bytearray)) else 'no'} raw bytes")
    return shape, raw


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


class _StandIn:
    """What ``find_class`` returns: one per global in the file, calling nothing of numpy's."""

    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind

    def __setstate__(self, state) -> NoReturn:
        _refuse("BUILD on a global")

    def __call__(self, *args):
        if self.kind == "reconstruct":
            cls = args[0] if len(args) == 3 else None
            if not (isinstance(cls, _StandIn) and cls.kind == "ndarray" and args[1:] == ((0,), b"b")):
                _refuse(f"_reconstruct{shown(args)} is not how numpy pickles an array")
            return PickledArray()
        if self.kind == "dtype":
            if len(args) != 3 or args[0] not in ("u1", b"u1") or args[1:] != (False, True):
                _refuse(f"only uint8 arrays are accepted, not numpy.dtype{shown(args)}")
            return PickledDtype()
        if self.kind == "encode":
            if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
                _refuse(f"refused to unpickle _codecs.encode{shown(args)}: only encode(text, 'latin1') is allowed")
            return args[0].encode("latin1")
        if self.kind == "frombuffer":
            if len(args) != 4 or args[3] != "C":
                _refuse("_frombuffer is accepted only as _frombuffer(buffer, dtype, shape, 'C')")
            return PickledArray(*_checked_array(args[2], args[1], args[0]))
        _refuse(f"numpy.{self.kind} cannot be called")


class _StandInUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> _StandIn:
        kind = _GLOBALS.get((module, name))
        if kind is None:
            _refuse(
                f"refused to unpickle {shown_text(f'{module}.{name}')}: only numpy arrays, lists and dicts are allowed"
            )
        return _StandIn(kind)

    def persistent_load(self, pid) -> NoReturn:
        _refuse("refused to unpickle a persistent id")


def load_array_pickle(data: bytes, where: str, what: str) -> object:
    """The value the pickle ``data`` (``what``, from ``where``) holds, numpy arrays as
    :class:`PickledArray` (module docstring)."""
    try:
        _prescan(data)
        return _StandInUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # ours (_Refused), and the unpickler's own: nothing but our stand-ins ran
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise AuditInputError(f"{where}: not a readable {what} ({reason})") from None


def _prescan(data: bytes) -> None:
    if data[:1] != b"\x80":
        _refuse("not a binary pickle (protocol 2 or later)")
    limit = MAX_OPCODES + len(data) // BYTES_PER_OPCODE
    end = None
    try:
        for count, (opcode, argument, position) in enumerate(pickletools.genops(data), start=1):
            arg: Any = argument  # an int for every opcode whose argument is looked at below
            if count > limit:
                _refuse(f"more than {limit} opcodes, many more than a batch of this size holds")
            if opcode.name not in _ALLOWED_OPCODES:
                _refuse(f"opcode {opcode.name} at byte {position} is not accepted")
            if opcode.name == "PROTO" and (position != 0 or not 2 <= arg <= 5):
                _refuse(f"protocol {arg} (2 to 5, once, at the start)")
            if opcode.name in ("BINPUT", "LONG_BINPUT") and arg > count:
                _refuse(f"memo index {arg} at byte {position}, beyond the {count} opcodes before it")
            if opcode.name in ("LONG1", "LONG4") and arg.bit_length() > 64:
                _refuse(f"an integer of {arg.bit_length()} bits")
            if opcode.name == "STOP":
                end = (position or 0) + 1
    except ValueError as exc:  # genops' truncated arguments and unknown opcodes
        _refuse(str(exc).splitlines()[0][:120])
    if end != len(data):
        _refuse("bytes after the end of the pickle")
