"""The 7-series AXI4-Stream adapters against a model of the block's stream interface.

The bench feeds ``m_axis_rx`` beats made by ``sim/xilinx7.py`` (PG054's rules, straddled and
partial beats at 128 bits, idle cycles) into ``AxisRxAdapter``, checks every raw TLP beat that
comes out against the raw-stream convention computed from the TLP bytes, loops the raw beats
back into ``AxisTxAdapter`` and checks that ``s_axis_tx`` obeys the block's transmit rules and
carries the very bytes that were sent, with random back-pressure on every stream.
"""
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.spec import raw_tlp_signature
from hdl.pcie.xilinx7 import AxisRxAdapter, AxisTxAdapter
from hdl.pcie.xilinx7.interface import axis_rx_signature, axis_tx_signature
from sim.runner import run


class AxisLoopbackBench(wiring.Component):
    """Both adapters side by side; the testbench closes the loop between ``rx`` and ``tx``."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "axis_rx": In(axis_rx_signature(width)),
            "rx": Out(raw_tlp_signature(width)),
            "tx": In(raw_tlp_signature(width)),
            "axis_tx": Out(axis_tx_signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx_adapter = rxa = AxisRxAdapter(width=self.width)
        m.submodules.tx_adapter = txa = AxisTxAdapter(width=self.width)
        wiring.connect(m, wiring.flipped(self.axis_rx), rxa.axis)
        wiring.connect(m, rxa.rx, wiring.flipped(self.rx))
        wiring.connect(m, wiring.flipped(self.tx), txa.tx)
        wiring.connect(m, txa.axis, wiring.flipped(self.axis_tx))
        return m


@pytest.mark.parametrize("width", [64, 128])
def test_xilinx7_axis_loopback(width):
    run(lambda: AxisLoopbackBench(width), toplevel=f"xilinx7_axis_{width}",
        test_module="xilinx7_axis_tb", params={"width": width})
