"""The driver model (sim/driver) against the pure-Python reference device (sim/refdev).

Each case is one cocotb run of some tests in driver_tb.py on a trivial toplevel
(cocotbext-pcie needs cocotb's scheduler, and so a simulator). The tests are grouped into
runs of similar length, since every run pays for starting the simulator. The seed is
printed; ``SEED=`` replays.
"""
import pytest

from sim.runner import run
from tests.cocotb.anchor_top import SimAnchor

GROUPS = {
    "init": ["enumeration_and_capabilities", "negotiation_matrix", "bad_chain_needs_reset"],
    "in_order": ["data_integrity_in_order", "multi_queue"],
    "unordered": ["data_integrity_unordered", "reset_mid_traffic"],
    "notifications": ["in_order_batching", "notification_suppression"],
}


@pytest.mark.parametrize("group", GROUPS)
def test_driver(group):
    run(SimAnchor, toplevel="sim_anchor", test_module="driver_tb", testcase=GROUPS[group])
