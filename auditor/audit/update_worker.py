"""The certificate state's update on a second thread, in chunks, while the next forward passes run."""

from __future__ import annotations

import queue
import threading

from ..certificate.state import CertificateState
from . import helper_threads
from .forward import BatchOutputs

# The update worker applies consecutive batches' outputs together, in chunks of at least this
# many rows. An update is ~150 small float64 operations whatever its row count, and each takes
# and gives back the GIL that the forward passes' thread needs too: on the benchmark's 2-core
# CPU (1024-row batches, 9 interleaved repeats) ours / floor was 1.14 updating per batch and
# 1.10 in 4096-row chunks.
UPDATE_CHUNK_ROWS = 4096
# At large K one batch is work enough for an update, and joining batches only copies them: a chunk
# holds at most this many K-vectors (4096 rows up to K = 16; at K = 100 and 200 a 1024-row batch
# goes alone). At K = 200 (64-value rows, N = 10⁶) the audit's peak memory fell from 473 to
# 383 MiB, the outputs waiting for the worker no longer joined into 13 MiB chunks; the worker's
# CPU per 100,000 rows from 1.01 to 0.99 s (medians of 6 audits, 784-value rows).
UPDATE_CHUNK_ENTRIES = 1 << 16
# Chunks handed over and not yet applied, at most. The worker shares its core with the input
# hashing, which takes that core for the first part of an audit: a deeper queue lets the update
# fall behind then and catch up later, where 2 made the forward passes wait. At K = 200 (100,000
# × 784 rows, 1024-row batches, 8 interleaved repeats on 2 cores) ours went from 1.43 to 1.39 s
# median with 8 (1.38 with 32); at K = 10 and 100 the difference was within the noise. It bounds
# the outputs waiting in memory to 8 chunks (20 MB at K = d = 200), whatever N.
UPDATE_QUEUE_CHUNKS = 8
# The worker runs the teacher's posterior (forward_batch's ``defer_teacher``) while fewer than
# this many chunks wait for it; behind that, the forward passes' thread runs it itself, so that
# neither core idles while the other has work. Either thread gives the same bits. On the
# benchmark's 2-core CPU (fitted teacher, 100,000 × 784 rows, 5 interleaved repeats; the A/A
# control read 0.98–1.03) ours / floor at K = 10, 100, 200 was 0.84, 0.88, 0.97 at 3, 0.84, 0.99,
# 1.09 deferring always (the second core then sets the pace), and 0.84, 0.90, 0.99 at 3 with the
# whole teacher deferred only below 2 (the repair and the softmax alone from 2 to 3).
DEFER_WHILE_QUEUED = 3


class UpdateWorker:
    """Applies ``state.update`` on a second thread, in submission order, while the caller runs
    the next batches' forward passes.

    Submitted outputs are applied in chunks: consecutive batches are concatenated until they
    hold at least ``chunk_rows`` rows (the rest when the pass ends; fewer rows at large K). The chunks depend only on
    the batch sizes, so a pass gives the same bits every time; they differ from in-line
    per-batch updates only in the rounding of the exact merge.

    For a CPU with a core to spare, where the update's float64 operations would otherwise add
    to the forward passes' time (torch releases the GIL inside them). On CUDA the kernels are
    asynchronous already and the update stays in-line.
    """

    def __init__(self, state: CertificateState):
        self.state = state
        self.chunk_rows = max(1, min(UPDATE_CHUNK_ROWS, UPDATE_CHUNK_ENTRIES // state.spec.num_classes))
        # Batches are gathered into chunks on the caller's side, so the worker is woken once a
        # chunk, not once a batch.
        self.pending: list[BatchOutputs] = []
        self.pending_rows = 0
        self.jobs: queue.Queue = queue.Queue(maxsize=UPDATE_QUEUE_CHUNKS)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="audit-update", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        helper_threads.yield_to_forward_passes()
        while (chunk := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    BatchOutputs.concatenated(chunk).update(self.state)
                except BaseException as exc:  # raised in the caller at the next submit or at finish
                    self.error = exc

    def has_room(self) -> bool:
        """Whether the worker is keeping up: fewer than DEFER_WHILE_QUEUED chunks wait for it."""
        return self.jobs.qsize() < DEFER_WHILE_QUEUED

    def submit(self, outputs: BatchOutputs) -> None:
        self._raise()
        self.pending.append(outputs)
        self.pending_rows += outputs.rows
        if self.pending_rows >= self.chunk_rows:
            self._hand_over()

    def _hand_over(self) -> None:
        if self.pending:
            self.jobs.put(self.pending)
            self.pending, self.pending_rows = [], 0

    def finish(self) -> None:
        self._hand_over()
        self.close()
        self._raise()

    def close(self) -> None:
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error
