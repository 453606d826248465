"""Hostile files, crafted byte by byte, and a child process to meet them in.

Every maker writes what a stranger could hand the tool: a pickle that crashes numpy, an `.npz`
member whose header claims 10¹³ elements, a zip bomb, a safetensors header of the wrong types.
:class:`LimitedCli` runs the real CLI in a child interpreter whose address space is capped a
given number of MiB above what it already holds, so that a crash (a signal), a hang (the
timeout) or an allocation beyond the cap shows as such instead of taking the test run down;
one child serves the whole test session (the ``limited_cli`` fixture of ``conftest.py``), so that
torch is imported once.
"""

from __future__ import annotations

import copy
import json
import select
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# --- pickles, opcode by opcode -------------------------------------------------------------------

PROTO2, STOP, MARK, POP, TUPLE, TUPLE1, TUPLE3 = b"\x80\x02", b".", b"(", b"0", b"t", b"\x85", b"\x87"
EMPTY_DICT, EMPTY_LIST, SETITEM, SETITEMS, APPENDS, REDUCE, BUILD = b"}", b"]", b"s", b"u", b"e", b"R", b"b"
NONE, NEWTRUE, NEWFALSE = b"N", b"\x88", b"\x89"


def GLOBAL(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def INT(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    return b"J" + struct.pack("<i", value)


def BINSTRING(data: bytes) -> bytes:
    """A Python 2 str (read as bytes, as the CIFAR originals are)."""
    return (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data


def BINPUT(index: int) -> bytes:
    return b"q" + bytes([index])


def BINGET(index: int) -> bytes:
    return b"h" + bytes([index])


def dtype_ops(code: bytes = b"u1", state: tuple = (b"|", None, None, None, -1, -1, 0)) -> bytes:
    """numpy.dtype(code, 0, 1) and BUILD (3, *state), as numpy writes a dtype."""
    endian, subarray, names, fields, elsize, alignment, flags = state
    out = GLOBAL("numpy", "dtype") + BINSTRING(code) + INT(0) + INT(1) + TUPLE3 + REDUCE + MARK + INT(3)
    out += BINSTRING(endian) + NONE + NONE + NONE + INT(elsize) + INT(alignment) + INT(flags) + TUPLE + BUILD
    assert (subarray, names, fields) == (None, None, None)
    return out


def array_ops(shape: tuple[int, ...], raw: bytes, dtype: bytes | None = None, module="numpy.core.multiarray") -> bytes:
    """_reconstruct(ndarray, (0,), b'b') and BUILD (1, shape, dtype, False, raw): a numpy 1 array pickle."""
    out = GLOBAL(module, "_reconstruct") + GLOBAL("numpy", "ndarray") + INT(0) + TUPLE1 + BINSTRING(b"b") + TUPLE3
    out += REDUCE + MARK + INT(1) + MARK + b"".join(INT(n) for n in shape) + TUPLE
    return out + (dtype if dtype is not None else dtype_ops()) + NEWFALSE + BINSTRING(raw) + TUPLE + BUILD


def python2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """What Python 2's cPickle.dump(batch, f, 2) wrote for the CIFAR-10 originals: bytes keys."""
    label_ops = EMPTY_LIST + (MARK + b"".join(INT(v) for v in labels) + APPENDS if labels else b"")
    data = array_ops((len(images), 3072), images.reshape(len(images), 3072).tobytes())
    entries = (
        BINSTRING(b"data") + data + BINSTRING(b"labels") + label_ops + BINSTRING(b"batch_label") + BINSTRING(b"b1")
    )
    return PROTO2 + EMPTY_DICT + MARK + entries + SETITEMS + STOP


# Issue 12's reproduction, byte for byte: 'data' is _reconstruct(ndarray, (0,), b'b') built with a
# V8 dtype holding an object field under flags 1 (refcounted, not list-pickled); numpy's
# ndarray.__setstate__ copies b'AAAAAAAA' into the object pointer, and the POP that follows frees
# it: the plain unpickler dies with SIGSEGV.
SEGV_BATCH = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01(K\x01tcnumpy\ndtype\n"
    b"U\x02V8\x89\x88\x87R(K\x03U\x01|NU\x01a\x85}U\x01acnumpy\ndtype\nU\x01O\x89\x88\x87R(K\x03U\x01|NNNJ\xff\xff"
    b"\xff\xffJ\xff\xff\xff\xffK?tbK\x00\x86sK\x08K\x01K\x01tb\x89U\x08AAAAAAAAtb0}U\x06labels]s."
)


def reference_bomb(width: int) -> bytes:
    """A CIFAR batch of 0 images whose labels list holds ``width`` references to one list of
    ``width`` references to one list of ``width`` ints: width³ labels once expanded."""
    inner = EMPTY_LIST + BINPUT(1) + MARK + INT(7) * width + APPENDS
    middle = EMPTY_LIST + BINPUT(2) + MARK + inner + BINGET(1) * (width - 1) + APPENDS
    outer = EMPTY_LIST + MARK + middle + BINGET(2) * (width - 1) + APPENDS
    entries = BINSTRING(b"data") + array_ops((0, 3072), b"") + BINSTRING(b"labels") + outer
    return PROTO2 + EMPTY_DICT + MARK + entries + SETITEMS + STOP


MEMO_BOMB = b"\x80\x02}r\x00\x00\x00\x10."  # LONG_BINPUT 2**28: CPython's unpickler grows its memo to 4 GiB


# --- .npz, zip and safetensors -------------------------------------------------------------------


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def zip_with(path: Path, name: str, member: bytes, compress: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        archive.writestr(name, member)
    return path


def npz_claiming(path: Path, name: str, shape: tuple[int, ...], data: bytes = bytes(8)) -> Path:
    """An .npz whose member's .npy header claims ``shape`` float64 over only ``data``."""
    return zip_with(path, f"{name}.npy", npy_header(shape) + data)


def deflated(prefix: bytes, zeros: int, chunk: int = 4 << 20) -> bytes:
    """A raw deflate stream of ``prefix`` and ``zeros`` zero bytes, made in time ∝ zeros / chunk: a
    chunk of zeros compressed from a fresh state and full-flushed refers to nothing before it,
    so the same bytes are valid wherever they stand and are simply repeated."""
    head, block, tail = (zlib.compressobj(9, zlib.DEFLATED, -15) for _ in range(3))
    whole, rest = divmod(zeros, chunk)
    repeated = block.compress(bytes(chunk)) + block.flush(zlib.Z_FULL_FLUSH) if whole else b""
    start = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    return start + repeated * whole + tail.compress(bytes(rest)) + tail.flush()


def npz_bomb(path: Path, name: str, shape: tuple[int, ...], zeros: int, declared_data: int | None = None) -> Path:
    """An .npz whose deflated member inflates to the .npy header of ``shape`` float64 and ``zeros``
    zero bytes, while its zip entry declares the header and ``declared_data`` zeros (default: the
    truth). The CRC-32 is that of the declared content up to 16 MiB; a larger member is refused
    from its declared size before its CRC could matter, and 0 spares computing it."""
    header = npy_header(shape)
    declared = zeros if declared_data is None else declared_data
    crc = zlib.crc32(bytes(declared), zlib.crc32(header)) if declared <= 16 << 20 else 0
    return zip_by_hand(path, f"{name}.npy", deflated(header, zeros), crc, len(header) + declared, method=8)


def zip_by_hand(path: Path, name: str, data: bytes, crc: int, size: int, method: int = 0) -> Path:
    """A one-member zip whose headers say exactly ``crc`` and ``size`` (zipfile would compute them)."""
    raw = name.encode()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0)
    central = struct.pack(
        "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, crc, len(data), size, len(raw), 0, 0, 0, 0, 0, 0
    )
    directory = central + raw
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), len(local) + len(raw) + len(data), 0)
    path.write_bytes(local + raw + data + directory + end)
    return path


def safetensors_with(path: Path, header: object, data: bytes = b"") -> Path:
    """A .safetensors file with exactly this header (any JSON value) and data."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def raw_safetensors(path: Path, header_text: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header_text)) + header_text + data)
    return path


# --- certificates, edited anywhere --------------------------------------------------------------


def key_paths(value, path: tuple = ()):
    """Every path of keys and indices into a JSON value, the empty one (the value itself) first."""
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from key_paths(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from key_paths(child, (*path, index))


def replaced(document: dict, path: tuple, value) -> dict:
    """A deep copy of ``document`` with ``value`` at ``path`` (a non-empty path of :func:`key_paths`)."""
    edited = copy.deepcopy(document)
    parent = edited
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return edited


# --- a child process with an address-space cap ---------------------------------------------------

_CHILD = """
import contextlib, importlib, io, json, resource, sys
sys.path.insert(0, {repo!r})
from auditor.cli.app import main  # torch and the rest: imported once, before any cap

def call(args):
    if args[0] != "python":
        return main(args)
    module, _, name = args[1].partition(":")  # python MODULE:FUNCTION: a check to run under the cap
    return getattr(importlib.import_module(module), name)()

def address_space():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) * 1024

reply = sys.stdout
for line in sys.stdin:
    args, budget = json.loads(line)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    resource.setrlimit(resource.RLIMIT_AS, (address_space() + budget * 2**20, hard))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            call(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:  # what the CLI let out: the test shows it
            code = f"{{type(exc).__name__}}: {{str(exc)[:300]}}"
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    reply.write(json.dumps([code, out.getvalue()[-4000:], err.getvalue()[-4000:]]) + "\\n")
    reply.flush()
"""


@dataclass
class Outcome:
    returncode: int | str | None  # an exit code, a signal (negative), what escaped, or None: timed out
    stdout: str
    stderr: str


class LimitedCli:
    """One child interpreter that runs ``audit`` commands one at a time, each under its own cap of
    address space (MiB above what the child already holds) and its own timeout. A command that
    crashes the child (a signal) or hangs (the timeout) ends it; the next command starts another.
    ``["python", "module:function"]`` calls that function instead (a fuzz run, say): its
    AssertionError, or anything else it lets out, comes back as the return code's text."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def run(self, args: list, budget_mib: int = 512, timeout: float = 60) -> Outcome:
        fresh = self.process is None or self.process.poll() is not None
        if fresh:
            code = textwrap.dedent(_CHILD.format(repo=str(REPO)))
            self.process = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, cwd=REPO,
            )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([[str(a) for a in args], budget_mib]) + "\n")
        self.process.stdin.flush()
        # A fresh child imports torch first: minutes on a busy machine.
        ready, _, _ = select.select([self.process.stdout], [], [], timeout + (300 if fresh else 0))
        line = self.process.stdout.readline() if ready else ""
        if not line:
            if ready:  # the child died: its exit status says how (-11: SIGSEGV)
                return Outcome(self.process.wait(), "", "")
            self.close()
            return Outcome(None, "", "timed out")
        return Outcome(*json.loads(line))

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def one_error_line(result: Outcome) -> str:
    """The command's stderr, which must be exactly one ``error: …`` line."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (result.returncode, result.stderr[-2000:])
    return lines[0]
