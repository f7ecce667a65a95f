"""The driver model (sim/driver) against the pure-Python reference device (sim/refdev).

Each case is one cocotb run of a test in driver_tb.py on a trivial toplevel (cocotbext-pcie
needs cocotb's scheduler, and so a simulator); the seed is printed, ``SEED=`` replays.
"""
import pytest

from sim.runner import run
from tests.cocotb.anchor_top import SimAnchor

CASES = ["enumeration_and_capabilities", "negotiation_matrix", "data_integrity_in_order",
         "data_integrity_unordered", "in_order_batching", "notification_suppression",
         "reset_mid_traffic", "multi_queue", "bad_chain_needs_reset"]


@pytest.mark.parametrize("case", CASES)
def test_driver(case):
    run(SimAnchor, toplevel="sim_anchor", test_module="driver_tb", testcase=case)
