"""cocotb tests of the virtio-blk backend (hdl/blk/) on Verilator.

The scenarios live in ``blk_backend_tb.py``; every one runs against one build of
:class:`sim.blk_harness.BlkHarness` (the backend, a RAM disk, storage-port taps) with the
parameters below: 16 requests in flight, 16 descriptors per request, 1 KiB DMA chunks (so
4 KiB requests take several commands), three queues, a 512-sector disk in four banks of
very different latency (2 to 200 cycles, plus up to 63 cycles of jitter) so that storage
commands finish out of order.
"""
import pytest

from sim.blk_harness import BlkHarness
from sim.runner import run

PARAMS = {
    "backend": {"seq_width": 6, "width": 64, "num_queues": 3, "serial": "virtio-blk-0042",
                "max_requests": 16, "max_descriptors": 16, "max_chunk": 1024,
                "size_max": 65536, "max_reads": 16, "max_writes": 16},
    "disk": {"capacity": 512, "banks": 4, "stripe": 8, "latency": [2, 30, 90, 200],
             "jitter": 64, "slots": 16, "init_seed": 1234},
}


def make_top():
    return BlkHarness(backend=PARAMS["backend"],
                      disk=dict(PARAMS["disk"], latency=tuple(PARAMS["disk"]["latency"])))


# Two simulator runs of similar length (about half a minute each on this machine), so that
# pytest-xdist can run them side by side; each starts from a fresh RAM disk.
GROUPS = {
    "service": ["smoke", "config_space", "random_mix", "streaming"],
    "errors": ["malformed", "flush_ordering", "dma_errors", "reset_mid_traffic"],
}


@pytest.mark.parametrize("group", list(GROUPS))
def test_blk_backend(group):
    run(make_top, toplevel="blk_harness", test_module="blk_backend_tb", params=PARAMS,
        testcase=GROUPS[group])
