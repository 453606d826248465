"""The audit's helper threads — reader, update worker, input hashing — and the core they use.

On a CPU the forward passes run on the calling thread and the helpers are meant for the core
that torch's intra-op threads leave free. The scheduler does not know that: a helper waking
up was often placed on the forward passes' core and pre-empted them (~80 times per 100k-row
benchmark audit on 2 cores, each time also evicting the encoder's weights from that core's
cache). Helpers therefore lower their own priority a little when there is a core to spare.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import torch

# Niceness added to each helper thread. On the 2-core benchmark (100k × 784, 15 interleaved
# repeats, per-repeat medians of ours / floor; an A/A floor / floor read 0.988): +0 1.082,
# +5 1.046, +10 1.061, and the pre-emptions of the forward passes fell from 87 to 14. With one
# busy process beside the audit: 1.33, 1.35, 1.35. A small value, so that on a machine busy
# with other jobs the helpers are not starved (the reader must keep up with the forward passes).
HELPER_NICE = 5


def spare_core() -> bool:
    """Whether this process may use more cores than torch's intra-op threads take."""
    return torch.get_num_threads() < len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else False


def yield_to_forward_passes() -> None:
    """Lower the calling thread's scheduling priority by HELPER_NICE, where that is safe.

    Only on Linux, where the nice value belongs to a thread (setpriority on a thread id; on
    other systems that id could name a process), and only with a core to spare: with every
    core in torch's use the helpers' work is on the critical path and keeps its priority.
    """
    if sys.platform != "linux" or not spare_core():
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # a sandbox that forbids it: the audit is only a little slower
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + HELPER_NICE))
