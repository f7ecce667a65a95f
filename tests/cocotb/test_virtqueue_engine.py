"""cocotb tests of the split-virtqueue engine (hdl/virtio/virtqueue_engine.py) on Verilator.

The scenarios live in ``virtqueue_engine_tb.py``; they run against a build of
:class:`sim.virtqueue_harness.VirtqueueHarness` with the parameters below, and a second
build with a fetch low water mark runs the in-order matrix, resets and its own scenario.
"""
import functools
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


LOW_WATER_PARAMS = {"engine": dict(PARAMS["engine"], fetch_low_water=4),
                    "backend": PARAMS["backend"]}


def make_top(params):
    return VirtqueueHarness(**params)


def _run(testcase: str | list[str], params=PARAMS) -> None:
    run(functools.partial(make_top, params), toplevel="virtqueue_harness",
        test_module="virtqueue_engine_tb", params=params, testcase=testcase,
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


def test_virtqueue_engine_low_water():
    _run(["low_water_batches", "matrix_io1_ei0_ind1", "matrix_io1_ei1_ind0",
          "reset_mid_traffic"], LOW_WATER_PARAMS)
