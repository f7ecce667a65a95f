"""cocotb tests of the split-virtqueue engine (hdl/virtio/virtqueue_engine.py) on Verilator.

The scenarios live in ``virtqueue_engine_tb.py``; every one runs against one build of
:class:`sim.virtqueue_harness.VirtqueueHarness` with the parameters below.
"""
import os

import pytest

from sim.runner import run
from sim.virtqueue_harness import VirtqueueHarness


PARAMS = {
    "engine": {"num_queues": 4, "max_queue_size": 32768, "reorder_depth": 32,
               "data_width": 64, "max_batch": 16, "max_block": 32, "max_chain_len": 16,
               "max_used_batch": 16},
    "backend": {"slots": 8, "min_latency": 0, "latency_span": 64},
}


def make_top():
    return VirtqueueHarness(**PARAMS)


def _run(testcase: str | list[str]) -> None:
    run(make_top, toplevel="virtqueue_harness", test_module="virtqueue_engine_tb",
        params=PARAMS, testcase=testcase,
        extra_env={k: v for k, v in os.environ.items() if k.startswith("VQ_")})


# Scenarios grouped so that each simulator start (a few seconds) serves several, and the
# groups balance on two pytest-xdist workers (index_wrap alone is the longest).
GROUPS = {
    "matrix_without_in_order": [f"matrix_io0_ei{e}_ind{i}" for e in (0, 1) for i in (0, 1)],
    "matrix_with_in_order": [f"matrix_io1_ei{e}_ind{i}" for e in (0, 1) for i in (0, 1)],
    "index_wrap": ["index_wrap"],
    "backend_reset_sizes": ["rtl_backend", "reset_mid_traffic", "queue_sizes",
                            "several_queues_fair"],
    "bad_input_and_protocol": ["bad_chains", "dma_errors", "suppression", "exact_qd1",
                               "ignored_doorbells", "smoke"],
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_virtqueue_engine(group):
    _run(GROUPS[group])
