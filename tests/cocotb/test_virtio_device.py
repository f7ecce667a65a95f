"""The whole virtio-pci device (VirtioPciDevice + the RTL test backend) through cocotbext-pcie's
RootComplex on Verilator; the cocotb tests are in ``virtio_device_tb.py``. Two builds: MSI-X
with a 64-bit BAR0, and INTx only with a 32-bit BAR0 (what QEMU's multi-process proxy
supports). Test knobs that do not change the design go through the environment, so both
builds are compiled once; the testbench uses only the harness's ports, so the models are
built with ``public="ports"`` (about half the compile time)."""
import json

import pytest

from hdl.pcie.params import LinkParams
from hdl.virtio.virtio_pci_device import VirtioPciDeviceParams
from sim.runner import run
from sim.virtio_device_harness import VirtioDeviceHarness

# Small engine and DMA buffers keep the Verilator builds cheap; the features are all there.
# The test backend's latencies reach 4 us (1024 cycles), far above the time between two
# elements, so that completions come back out of order.
COMMON = dict(width=64, reorder_depth=16, max_queue_size=32768, link_speed=3, link_width=8,
              max_batch=8, max_block=16, max_chain_len=32, max_used_batch=8, dma_tags=16,
              dma_read_slots=8, backend_slots=8, backend_latency_span=1024)
BUILDS = {
    "msix_bar64": dict(COMMON, num_queues=4, msix_vectors=8, bar_64bit=True),
    "intx_bar32": dict(COMMON, num_queues=2, msix_vectors=0, bar_64bit=False),
}
KNOBS = {       # requests per queue, feature combinations run
    "msix_bar64": dict(requests=40, matrix=8),
    "intx_bar32": dict(requests=40, matrix=3),
}
DEVICE_TESTS = ["enumeration_and_capabilities", "pci_cfg_window", "register_semantics",
                "feature_matrix", "reset_mid_traffic", "bad_descriptor_loop"]
TESTS = {       # the DMA probe needs one build only: the engine is the same in both
    "msix_bar64": DEVICE_TESTS + ["dma_end_to_end"],
    "intx_bar32": DEVICE_TESTS,
}


def make_top(build: str) -> VirtioDeviceHarness:
    p = BUILDS[build]
    params = VirtioPciDeviceParams(
        link=LinkParams(speed=p["link_speed"], width=p["link_width"]),
        **{k: v for k, v in p.items() if not k.startswith(("link_", "backend_"))})
    return VirtioDeviceHarness(params, test_backend=dict(
        slots=p["backend_slots"], latency_span=p["backend_latency_span"]))


@pytest.mark.parametrize("build", BUILDS)
def test_virtio_device(build):
    run(lambda: make_top(build), toplevel="virtio_device", test_module="virtio_device_tb",
        params=BUILDS[build], testcase=TESTS[build],
        extra_env={"VIRTIO_TB": json.dumps(KNOBS[build])},
        public="ports")
