"""The whole RTL virtio-blk device (hdl/top.py) end to end: cocotbext-pcie root complex,
sim/pcie_bridge.py with random idle beats and back-pressure, the Linux-like driver model,
golden disk. The scenarios are in blk_device_e2e_tb.py; each group is one simulator run of
one build from sim.blk_device.PRESETS (both builds are compiled once and cached)."""
import functools

import pytest

from sim.blk_device import PRESETS, make_top
from sim.runner import run

GROUPS = {
    "in_order": ("msix", ["mix_in_order"]),
    "unordered": ("msix", ["mix_unordered"]),
    "errors": ("msix", ["malformed_requests", "needs_reset_and_recovery"]),
    "intx": ("intx", ["intx_mix"]),
}


@pytest.mark.parametrize("group", GROUPS)
def test_blk_device(group):
    build, tests = GROUPS[group]
    knobs = PRESETS[build]
    run(functools.partial(make_top, knobs), toplevel="blk_device",
        test_module="blk_device_e2e_tb",
        params=knobs, testcase=tests, public="ports")
