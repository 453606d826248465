"""The device pass: prefetching, stored-dtype transfer, precision, out-of-memory halving, auto batch size."""

import contextlib
import io
import os
import sys
import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.audit import batch_size, helper_threads, memory, prefetch, transfer, update_worker
from auditor.audit.pipeline import run_audit
from auditor.audit.plan import PassPlan
from auditor.audit.prefetch import host_batches
from auditor.audit.request import AuditRequest
from auditor.audit.stream import run_pass
from auditor.certificate.state import nonfinite_rows
from auditor.cli.app import main as cli_main
from auditor.errors import AuditInputError
from auditor.reports.progress import BatchProgress, progress_wanted
from auditor.sources.arrays import InMemoryArray, open_array, read_rows, row_ranges
from auditor.teachers.pca_gmm import PcaGmmTeacher

from . import pass_fixtures as fx
from . import reference as ref

CPU = torch.device("cpu")


def run(plan, batch_size, state=None, **kwargs):
    state = state if state is not None else fx.fresh_state(plan.with_view)
    used = run_pass(plan, state, batch_size, CPU, **kwargs)
    return state, used


def test_pass_matches_plain_numpy_formulas():
    x = fx.inputs(97)
    plan = fx.plan(x)
    state, _ = run(plan, 16)
    numbers = state.compute()
    with torch.no_grad():
        mu = plan.encoder.encode(torch.from_numpy(x))[0].double().numpy()
        p = plan.teacher(torch.from_numpy(x)).numpy()
    expected = ref.certificate(mu, p, fx.K, fx.BETA)
    assert numbers.margin == pytest.approx(expected["margin"], rel=1e-9, abs=1e-12)
    assert numbers.teacher_information == pytest.approx(expected["teacher_information"], rel=1e-9, abs=1e-12)
    assert numbers.margin_lcb(0.95) == pytest.approx(expected["margin_lcb"], rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------- prefetching


def test_prefetching_yields_the_plain_loops_batches():
    x = fx.inputs(53)
    ranges = list(row_ranges(0, 53, 10))
    plain = list(host_batches({"x": InMemoryArray(x)}, ranges, prefetch=False))
    ahead = list(host_batches({"x": InMemoryArray(x)}, ranges, prefetch=True))
    assert [b.rows for b in ahead] == [b.rows for b in plain] == ranges
    for a, b in zip(ahead, plain):
        assert torch.equal(a.tensors["x"], b.tensors["x"])
    assert torch.equal(torch.cat([b.tensors["x"] for b in ahead]), torch.from_numpy(x))


def test_shuffled_index_batches_travel_like_row_ranges(tmp_path):
    """The trainer's batches: row indices in any order, from memory or from a file, read ahead."""
    x = fx.inputs(53)
    np.save(tmp_path / "x.npy", x)
    order = np.random.default_rng(0).permutation(53)
    selections = [order[i : i + 10] for i in range(0, 53, 10)]
    for reader in (InMemoryArray(x), open_array(tmp_path / "x.npy", "x")):
        batches = list(host_batches({"x": reader}, selections, prefetch=True))
        assert [b.size for b in batches] == [10, 10, 10, 10, 10, 3]
        for batch, rows in zip(batches, selections):
            assert batch.rows is rows and torch.equal(batch.tensors["x"], torch.from_numpy(x[rows]))


class _CountingReader:
    """A reader over an array that records each read it is asked for."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def read(self, start, stop):
        self.reads.append((start, stop))
        return self.array[start:stop].copy()


@given(st.lists(st.integers(0, 39), max_size=30))
@settings(max_examples=50, deadline=None)
def test_reading_indices_reads_each_run_of_consecutive_rows_once(indices):
    x = fx.inputs(40)
    reader = _CountingReader(x)
    rows = np.array(indices, dtype=np.int64)
    assert np.array_equal(read_rows(reader, rows), x[rows])
    unique = np.unique(rows)
    runs = 0 if not len(unique) else 1 + int((np.diff(unique) > 1).sum())
    assert len(reader.reads) == runs


def test_prefetched_pass_gives_identical_state():
    x = fx.inputs(131)
    with_prefetch, _ = run(fx.plan(x), 32, prefetch=True)
    without, _ = run(fx.plan(x), 32, prefetch=False)
    fx.assert_states_equal(with_prefetch, without)


def test_update_worker_gives_the_in_line_state(monkeypatch):
    monkeypatch.setattr(update_worker, "UPDATE_CHUNK_ROWS", 1)  # every batch a chunk of its own
    x = fx.inputs(157)
    pipelined, _ = run(fx.plan(x), 16, pipeline=True)
    in_line, _ = run(fx.plan(x), 16, pipeline=False)
    fx.assert_states_equal(pipelined, in_line)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("with_view", [False, True])
def test_the_teacher_runs_where_there_is_room_with_the_same_bits(monkeypatch, with_view, precision):
    """With an update worker that keeps up, the worker runs the teacher; with one that is behind,
    the forward passes' thread does. Either way the state is the in-line pass's, bit for bit, at
    fp32 and with the encoder under bf16 autocast."""
    monkeypatch.setattr(update_worker, "UPDATE_CHUNK_ROWS", 1)
    threads = []
    original = PcaGmmTeacher._repaired

    def spy(self, *args):
        threads.append(threading.current_thread().name)
        return original(self, *args)

    monkeypatch.setattr(PcaGmmTeacher, "_repaired", spy)
    x = fx.inputs(157)
    in_line, _ = run(fx.plan(x, with_view=with_view), 16, pipeline=False, precision=precision)
    assert threads and set(threads) == {threading.current_thread().name}
    for queued, thread in ((10**9, "audit-update"), (0, threading.current_thread().name)):
        monkeypatch.setattr(update_worker, "DEFER_WHILE_QUEUED", queued)
        threads.clear()
        pipelined, _ = run(fx.plan(x, with_view=with_view), 16, pipeline=True, precision=precision)
        assert threads and set(threads) == {thread}
        fx.assert_states_equal(pipelined, in_line)


class _RecordingState(type(fx.fresh_state())):
    """Keeps every update's arguments."""

    def __init__(self, spec):
        super().__init__(spec)
        self.calls = []

    def update(self, mu, p, logvar=None, p_view=None):
        self.calls.append((mu, p, logvar))
        super().update(mu, p, logvar, p_view)


@pytest.mark.parametrize("with_view", [False, True])
def test_update_worker_applies_consecutive_batches_in_chunks(monkeypatch, with_view):
    monkeypatch.setattr(update_worker, "UPDATE_CHUNK_ROWS", 40)
    x = fx.inputs(157)
    recorded = _RecordingState(fx.SPEC) if not with_view else None
    pipelined, _ = run(fx.plan(x, with_view=with_view), 16, pipeline=True, state=recorded)
    in_line, _ = run(fx.plan(x, with_view=with_view), 16, pipeline=False)
    if recorded is not None:  # 16-row batches joined until >= 40 rows; the rest at the end
        assert [len(mu) for mu, _, _ in recorded.calls] == [48, 48, 48, 13]
    # the same data, merged in other chunks: every state entry equal to float64 rounding
    chunked, per_batch = pipelined.state_dict(), in_line.state_dict()
    assert chunked.keys() == per_batch.keys()
    for key in chunked:
        torch.testing.assert_close(chunked[key], per_batch[key], rtol=1e-12, atol=1e-13, msg=key)
    again, _ = run(fx.plan(x, with_view=with_view), 16, pipeline=True)
    fx.assert_states_equal(pipelined, again)  # the chunks depend only on the batch sizes


def test_update_worker_joins_fewer_rows_at_large_k():
    """At large K a batch alone is an update's worth; joining batches would only copy them."""
    from auditor.certificate.state import CertificateState
    from auditor.certificate.witness import WitnessSpec

    sizes = {}
    for k in (3, 10, 16, 100, 200):
        worker = update_worker.UpdateWorker(CertificateState(WitnessSpec(k, k, 2.0)))
        sizes[k] = worker.chunk_rows
        worker.close()
    assert sizes == {3: 4096, 10: 4096, 16: 4096, 100: 655, 200: 327}


def test_update_worker_error_reaches_the_caller():
    class Refusing(type(fx.fresh_state())):
        def update(self, mu, p, logvar=None, p_view=None):
            raise AuditInputError("refused in the worker")

    before = threading.active_count()
    with pytest.raises(AuditInputError, match="refused in the worker"):
        run(fx.plan(fx.inputs(64)), 8, state=Refusing(fx.SPEC), pipeline=True)
    assert threading.active_count() == before


def test_nonfinite_row_count_matches_numpy():
    x = np.random.default_rng(3).normal(size=(50, 7)).astype(np.float32)
    x[[1, 4, 4, 9], [0, 2, 3, 6]] = [np.nan, np.inf, -np.inf, np.nan]
    x[20] = np.finfo(np.float32).max  # huge but finite: not counted
    expected = int((~np.isfinite(x)).any(axis=1).sum())
    assert int(nonfinite_rows(torch.from_numpy(x))) == expected == 3
    assert int(nonfinite_rows(torch.zeros(4, 3, dtype=torch.uint8))) == 0


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    rows=st.integers(1, 40),
    cols=st.integers(1, 9),
    seed=st.integers(0, 2**32 - 1),
    specials=st.lists(st.sampled_from(["nan", "inf", "-inf", "max", "-max"]), max_size=12),
)
def test_nonfinite_row_count_matches_numpy_whatever_the_values(dtype, rows, cols, seed, specials):
    """The whole-batch sum shortcut must neither miss a bad value nor count a huge finite one."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, cols)).astype(dtype)
    top = np.finfo(dtype).max
    values = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "max": top, "-max": -top}
    for name in specials:
        x[rng.integers(rows), rng.integers(cols)] = values[name]
    expected = int((~np.isfinite(x)).any(axis=1).sum())
    assert int(nonfinite_rows(torch.from_numpy(x))) == expected


class _FailingReader:
    shape, dtype = (40, fx.D), np.dtype(np.float32)

    def read(self, start, stop):
        if start >= 20:
            raise AuditInputError("disk went away")
        return np.zeros((stop - start, fx.D), np.float32)


def test_reader_error_reaches_the_caller_and_the_thread_ends():
    before = threading.active_count()
    plan = PassPlan({"x": _FailingReader()}, encoder=fx.encoder(), teacher=fx.teacher())
    with pytest.raises(AuditInputError, match="disk went away"):
        run(plan, 10)
    assert threading.active_count() == before


def test_consumer_error_stops_the_reader_thread():
    before = threading.active_count()
    batches = host_batches({"x": InMemoryArray(fx.inputs(100))}, list(row_ranges(0, 100, 5)))
    next(batches)
    batches.close()  # what a `for` loop does when its body raises
    assert threading.active_count() == before


# ---------------------------------------------------------------------------- stored dtype


def test_uint8_inputs_travel_as_bytes_and_are_scaled_exactly():
    raw = np.random.default_rng(5).integers(0, 256, size=(70, fx.D), dtype=np.uint8)
    host = [b.tensors for b in host_batches({"x": InMemoryArray(raw)}, [(0, 35), (35, 70)])]
    assert all(b["x"].dtype == torch.uint8 for b in host)
    as_bytes, _ = run(fx.plan(raw), 16)
    as_floats, _ = run(fx.plan(raw.astype(np.float32) / np.float32(255)), 16)
    fx.assert_states_equal(as_bytes, as_floats)


def test_nonfinite_inputs_are_raised_after_the_pass():
    x = fx.inputs(40)
    x[[3, 31]] = np.nan
    with pytest.raises(AuditInputError, match="NaN or inf in 2 samples"):
        run(fx.plan(x), 8)


def test_cpu_reader_counts_nonfinite_rows_of_both_views():
    x, view = fx.inputs(30), fx.inputs(30)
    x[[2, 17]] = np.nan
    view[[5]] = np.inf
    sources = {"x": InMemoryArray(x), "x_teacher": InMemoryArray(view)}
    counted = list(host_batches(sources, [(0, 10), (10, 30)], count_nonfinite=True))
    assert [int(b.nonfinite_rows) for b in counted] == [2, 1]
    assert all(b.nonfinite_rows is None for b in host_batches(sources, [(0, 30)]))  # left to the device


def test_nonfinite_rows_are_counted_once_when_out_of_memory_retries_a_batch():
    x = fx.inputs(64)
    x[[1, 40]] = np.nan
    with pytest.raises(AuditInputError, match="NaN or inf in 2 samples"):
        run(fx.plan(x, enc=_SmallMemoryEncoder(fx.encoder(), limit=8)), 32)


# ---------------------------------------------------------------------------- precision


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_is_close_to_fp32(precision):
    x = fx.inputs(200)
    full = run(fx.plan(x), 64)[0].compute()
    low = run(fx.plan(x), 64, precision=precision)[0].compute()
    assert low.margin == pytest.approx(full.margin, abs=0.02)
    assert low.teacher_information == pytest.approx(full.teacher_information, rel=1e-12)  # the teacher is float64
    assert low.margin != full.margin  # the encoder really ran at lower precision


def test_unknown_precision_is_refused():
    with pytest.raises(AuditInputError, match="--precision"):
        run(fx.plan(fx.inputs(4)), 4, precision="fp8")


def test_precision_and_batch_size_are_recorded_in_settings(tmp_path):
    paths = fx.write_inputs(tmp_path, fx.inputs(50))
    request = AuditRequest(
        model=paths["model"],
        teacher=paths["teacher"],
        data=str(paths["data"]),
        precision="bf16",
        batch_size="auto",
        device="cpu",
    )
    result = run_audit(request)
    settings = result.context["settings"]
    assert settings["precision"] == "bf16"
    assert settings["batch_size"] == "auto"
    assert settings["batch_size_used"] == batch_size.cpu_batch_size((fx.D,))
    assert settings["world_size"] == 1


def _margin_of(**files) -> float:
    return run_audit(AuditRequest(**files, batch_size=32, device="cpu", model_diagnostics=False)).numbers.margin


def test_big_endian_inputs_give_the_numbers_of_native_ones(tmp_path):
    """torch refuses foreign byte orders: the reader swaps them (data, latents, probabilities)."""
    x = fx.inputs(90)
    paths = fx.write_inputs(tmp_path, x)
    big = lambda a: a.astype(a.dtype.newbyteorder(">"))  # noqa: E731
    np.save(tmp_path / "big.npy", big(x))
    model = {"model": paths["model"], "teacher": paths["teacher"]}
    assert _margin_of(**model, data=str(tmp_path / "big.npy")) == _margin_of(**model, data=str(paths["data"]))

    rng = np.random.default_rng(5)
    mu, probs = rng.normal(size=(90, 3)), rng.dirichlet(np.ones(fx.K), size=90)
    for name, order in (("native", "="), ("big", ">")):
        np.savez(tmp_path / f"{name}-mu.npz", mu=mu.astype(mu.dtype.newbyteorder(order)))
        np.savez(tmp_path / f"{name}-p.npz", probs=probs.astype(probs.dtype.newbyteorder(order)))
    margins = [
        _margin_of(latents=tmp_path / f"{name}-mu.npz", teacher_probs=tmp_path / f"{name}-p.npz", beta=2.0)
        for name in ("native", "big")
    ]
    assert margins[0] == margins[1]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--precision", "fp8"], "--precision"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "lots"], "--batch-size"),
    ],
)
def test_bad_performance_flags_exit_2(tmp_path, capsys, flags, message):
    paths = fx.write_inputs(tmp_path, fx.inputs(10))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            [
                "certify",
                "--model",
                str(paths["model"]),
                "--teacher",
                str(paths["teacher"]),
                "--data",
                str(paths["data"]),
                "--out",
                str(tmp_path / "out"),
                *flags,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------- out-of-memory halving


class _SmallMemoryEncoder(torch.nn.Module):
    """The real encoder, but batches above ``limit`` rows raise CUDA's out-of-memory error."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.refused = inner, limit, []

    def encode(self, x):
        if x.shape[0] > self.limit:
            self.refused.append(x.shape[0])
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.encode(x)


def test_out_of_memory_halves_the_batch_and_gives_identical_numbers():
    x = fx.inputs(150)
    small = _SmallMemoryEncoder(fx.encoder(), limit=16)
    halved, used = run(fx.plan(x, enc=small), 64)
    assert used == 16
    assert small.refused == [64, 32]  # halved once per failure, then stays at the size that fitted
    plain, _ = run(fx.plan(x), 16)
    fx.assert_states_equal(halved, plain)


class _StateFailingMidUpdate(type(fx.fresh_state())):
    """Runs out of memory after part of ``update`` has already changed the state."""

    def update(self, mu, p, logvar=None, p_view=None):
        super().update(mu, p, logvar, p_view)
        if mu.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")


def test_out_of_memory_inside_the_update_rolls_the_state_back():
    # In-line updates (the default; with pipeline=True the update runs on a worker thread).
    x = fx.inputs(40)
    failing = _StateFailingMidUpdate(fx.SPEC)
    _, used = run(fx.plan(x), 32, state=failing, pipeline=False)
    assert used == 8
    plain, _ = run(fx.plan(x), 8, pipeline=False)
    fx.assert_states_equal(failing, plain)


def test_out_of_memory_at_batch_size_one_is_a_clear_error():
    with pytest.raises(AuditInputError, match="even at batch size 1"):
        run(fx.plan(fx.inputs(10), enc=_SmallMemoryEncoder(fx.encoder(), limit=0)), 4)


def test_other_errors_are_not_retried():
    class Broken(torch.nn.Module):
        def encode(self, x):
            raise ValueError("not an OOM")

    with pytest.raises(ValueError, match="not an OOM"):
        run(fx.plan(fx.inputs(10), enc=Broken()), 4)


# ---------------------------------------------------------------------------- auto batch size


def test_largest_fitting_batch_doubles_until_out_of_memory():
    tried = []

    def try_batch(size):
        tried.append(size)
        if size > 3000:
            raise torch.OutOfMemoryError("out of memory")

    assert memory.largest_fitting_batch(try_batch, 256, 65536) == 2048
    assert tried == [256, 512, 1024, 2048, 4096]
    assert memory.largest_fitting_batch(lambda s: None, 256, 1000) == 1000  # capped (e.g. by N)


def test_largest_fitting_batch_halves_when_the_first_probe_fails():
    def try_batch(size):
        if size > 100:
            raise torch.OutOfMemoryError("out of memory")

    assert memory.largest_fitting_batch(try_batch, 256, 65536) == 64


def test_cpu_rule_for_auto():
    assert batch_size.cpu_batch_size((64,)) == batch_size.CPU_MAX_BATCH
    assert batch_size.cpu_batch_size((3, 512, 512)) == batch_size.CPU_MIN_BATCH
    assert batch_size.cpu_batch_size((3, 64, 64)) == (32 << 20) // (4 * 3 * 64 * 64)


def test_parse_batch_size():
    assert batch_size.parse_batch_size("auto") == "auto"
    assert batch_size.parse_batch_size("128") == 128
    for bad in ("0", "-3", "1.5", "x"):
        with pytest.raises(AuditInputError):
            batch_size.parse_batch_size(bad)


# ---------------------------------------------------------------------------- progress


def test_progress_counts_rows_and_draws_only_after_the_delay():
    from rich.console import Console

    out = io.StringIO()
    quiet_bar = BatchProgress(enabled=True, show_after=3600, console=Console(file=out, force_terminal=True))
    quiet_bar.begin(30)
    for rows in (10, 10, 10):
        quiet_bar(rows)
    quiet_bar.close()
    assert quiet_bar.done == 30 and out.getvalue() == ""

    drawn = io.StringIO()
    with BatchProgress(enabled=True, show_after=0, console=Console(file=drawn, force_terminal=True)) as bar:
        bar.begin(30)
        bar(30)
    assert "30/30" in drawn.getvalue()


def test_progress_only_for_an_interactive_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert progress_wanted(False, Tty(), Tty())
    assert not progress_wanted(True, Tty(), Tty())
    assert not progress_wanted(False, io.StringIO(), Tty())  # stdout piped (e.g. --json | jq)
    assert not progress_wanted(False, Tty(), io.StringIO())


def test_run_audit_reports_progress_per_batch(tmp_path):
    paths = fx.write_inputs(tmp_path, fx.inputs(50))
    bar = BatchProgress(enabled=False)
    run_audit(
        AuditRequest(
            model=paths["model"], teacher=paths["teacher"], data=str(paths["data"]), batch_size=16, device="cpu"
        ),
        progress=bar,
    )
    assert (bar.total, bar.done) == (50, 50)


# ---------------------------------------------------------------------------- flat memory, background hashing


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("layout", ["npy", "npy-fortran", "safetensors"])
def test_row_reads_from_files_are_exact_and_keep_memory_flat(tmp_path, layout):
    from safetensors.numpy import save_file

    from auditor.sources.arrays import FileRows, MappedArray, open_array

    rows = np.arange(200_000 * 7, dtype=np.float32).reshape(200_000, 7)  # 28-byte rows: pages split rows
    path = tmp_path / ("x.safetensors" if layout == "safetensors" else "x.npy")
    if layout == "safetensors":
        save_file({"before": np.ones(3, np.uint8), "x": rows}, str(path))  # x starts at an odd offset
    else:
        np.save(path, np.asfortranarray(rows) if layout == "npy-fortran" else rows)
    del rows
    reader = open_array(path, "x")
    assert isinstance(reader, MappedArray if layout == "npy-fortran" else FileRows)
    before = _rss_kib()
    for begin in range(0, 200_000, 3000):
        got = reader.read(begin, begin + 3000)
        expected = np.arange(begin * 7, min(begin + 3000, 200_000) * 7, dtype=np.float32).reshape(-1, 7)
        assert got.flags.writeable and got.flags.c_contiguous
        assert np.array_equal(got, expected)
    # 5.6 MB were read; a memory map kept whole, or a file read whole, would stay resident.
    assert _rss_kib() - before < 2_000


def test_background_hashes_equal_plain_hashes_and_errors_are_clear(tmp_path):
    import hashlib

    from auditor.sources.hashing import PendingDigest, hashing_in_background, resolve_digest, sha256_file

    path = tmp_path / "blob"
    path.write_bytes(b"x" * 3_000_001)
    with hashing_in_background():
        pending = sha256_file(path)
        missing = sha256_file(tmp_path / "gone")
        assert isinstance(pending, PendingDigest)
        assert resolve_digest(pending) == hashlib.sha256(b"x" * 3_000_001).hexdigest()
        with pytest.raises(AuditInputError, match="no such file"):
            resolve_digest(missing)
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_001).hexdigest()  # synchronous again outside


# ---------------------------------------------------------------------------- the CUDA copy schedule (mocked)


class _FakeCuda:
    """Stands in for torch.cuda: records the order of copies, event records and waits."""

    def __init__(self):
        self.log = []
        fake = self

        class Stream:
            def __init__(self, device):
                self.name = "copy"

            def wait_event(self, event):
                fake.log.append(("wait", event.batch))

        class Event:
            def record(self, stream):
                self.batch = fake.copied
                fake.log.append(("record", self.batch, stream.name))

        self.Stream, self.Event = Stream, Event
        self.compute = Stream(None)
        self.compute.name = "compute"
        self.copied = None

    @contextlib.contextmanager
    def stream(self, stream):
        self.log.append(("enter", stream.name))
        yield
        self.log.append(("exit", stream.name))

    def current_stream(self):
        return self.compute


class _Moved(torch.Tensor):
    pass


def test_cuda_copies_run_one_batch_ahead_and_compute_waits_for_its_own_copy(monkeypatch):
    fake = _FakeCuda()
    recorded = []

    def fake_copy(tensor, device):
        fake.copied = int(tensor[0, 0])
        fake.log.append(("copy", fake.copied))
        moved = tensor.clone().as_subclass(_Moved)
        moved.record_stream = lambda stream: recorded.append((int(tensor[0, 0]), stream.name))
        return moved

    monkeypatch.setattr(transfer, "copy_to", fake_copy)
    host = [prefetch.Batch((i, i + 1), {"x": torch.full((1, 2), float(i))}) for i in range(3)]
    order = []
    for item in transfer.device_batches(iter(host), torch.device("cuda"), cuda=fake):
        begin, batch = item.rows[0], item.tensors
        order.append(begin)
        fake.log.append(("compute", begin))
        assert int(batch["x"][0, 0]) == begin
    assert order == [0, 1, 2]
    assert recorded == [(0, "compute"), (1, "compute"), (2, "compute")]
    events = [e for e in fake.log if e[0] in ("copy", "record", "wait", "compute")]
    assert events == [
        ("copy", 0),
        ("record", 0, "copy"),
        ("copy", 1),
        ("record", 1, "copy"),
        ("wait", 0),
        ("compute", 0),  # copy 1 issued before compute 0
        ("copy", 2),
        ("record", 2, "copy"),
        ("wait", 1),
        ("compute", 1),
        ("wait", 2),
        ("compute", 2),
    ]
    assert all(e[1] == "copy" for e in fake.log if e[0] == "enter")  # copies only on the side stream


def test_pinned_host_batches_for_cuda(monkeypatch):
    pinned = []

    def fake_pin(self):
        pinned.append(self.shape)
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    batches = list(host_batches({"x": InMemoryArray(fx.inputs(10))}, [(0, 5), (5, 10)], pin=True))
    assert pinned == [torch.Size([5, fx.D]), torch.Size([5, fx.D])] and len(batches) == 2


def test_auto_batch_size_on_cuda_probes_the_real_work_until_out_of_memory(monkeypatch):
    # The CUDA probe, run on the CPU: copies are identities, synchronize is a no-op, and the
    # encoder runs out of memory above 700 rows.
    monkeypatch.setattr(transfer, "copy_to", lambda tensor, device: tensor)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    small = _SmallMemoryEncoder(fx.encoder(), limit=700)
    plan = fx.plan(fx.inputs(3000), enc=small)
    size = batch_size.auto_batch_size(plan, fx.fresh_state, torch.device("cuda"), (fx.D,))
    assert size == 512
    assert small.refused == [1024]
    capped = batch_size.auto_batch_size(fx.plan(fx.inputs(300)), fx.fresh_state, torch.device("cuda"), (fx.D,))
    assert capped == 300  # never more than N


def test_update_worker_only_with_a_spare_core(monkeypatch):
    started = []
    original = update_worker.UpdateWorker.__init__

    def spy(self, state):
        started.append(True)
        original(self, state)

    monkeypatch.setattr(update_worker.UpdateWorker, "__init__", spy)
    monkeypatch.setattr(helper_threads, "spare_core", lambda: False)
    run(fx.plan(fx.inputs(20)), 8)
    assert started == []
    monkeypatch.setattr(helper_threads, "spare_core", lambda: True)
    run(fx.plan(fx.inputs(20)), 8)
    assert started == [True]


def test_reader_and_update_worker_threads_step_back(monkeypatch):
    called_from = []
    monkeypatch.setattr(
        helper_threads, "yield_to_forward_passes", lambda: called_from.append(threading.current_thread().name)
    )
    run(fx.plan(fx.inputs(40)), 8, pipeline=True)
    assert sorted(called_from) == ["audit-prefetch", "audit-update"]


def _nice_in_new_thread() -> tuple[int, int]:
    """(niceness before, after) yield_to_forward_passes in a fresh thread."""
    seen = []

    def body():
        me = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, me)
        helper_threads.yield_to_forward_passes()
        seen.append((before, os.getpriority(os.PRIO_PROCESS, me)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return seen[0]


@pytest.mark.skipif(sys.platform != "linux", reason="thread niceness is Linux's")
def test_yield_to_forward_passes_lowers_only_the_calling_threads_priority(monkeypatch):
    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    monkeypatch.setattr(helper_threads, "spare_core", lambda: False)
    before, after = _nice_in_new_thread()
    assert after == before  # every core in torch's use: helpers keep their priority
    monkeypatch.setattr(helper_threads, "spare_core", lambda: True)
    before, after = _nice_in_new_thread()
    assert after == min(19, before + helper_threads.HELPER_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before


def test_the_hashing_thread_steps_back_too(monkeypatch, tmp_path):
    from auditor.sources.hashing import hashing_in_background, resolve_digest, sha256_file

    called_from = []
    monkeypatch.setattr(
        helper_threads, "yield_to_forward_passes", lambda: called_from.append(threading.current_thread().name)
    )
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    with hashing_in_background(helper_threads.yield_to_forward_passes):  # what run_audit passes
        digest = resolve_digest(sha256_file(path))
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert len(called_from) == 1 and called_from[0].startswith("audit-hash")
