"""The device as the 7-series hard block's user side sees it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.xilinx7 import AxisRxAdapter, AxisTxAdapter, CfgStatus
from hdl.pcie.xilinx7.interface import axis_rx_signature, axis_tx_signature

if TYPE_CHECKING:
    from .device import DeviceParams

__all__ = ["Pcie7xDevice"]


class Pcie7xDevice(wiring.Component):
    """A design (``design_factory(params)``) behind the adapters, with the block's user-side
    ports.

    This is everything of the Nitefury top except the PCIe IP and the clock and pin
    buffers: the receive adapter, the transmit adapter, :class:`~hdl.pcie.xilinx7.CfgStatus`
    and the design. The board top connects it to the ``pcie_7x`` instance port for port, and
    the end-to-end simulation (``tests/cocotb/test_pcie7x_device.py``) drives the same ports
    from a model of the block, so both use one composition.

    Reset: the ``sync`` domain's reset, which on the board is the block's ``user_reset_out``.

    Parameters
    ----------
    params : DeviceParams
    design_factory : callable
        ``DeviceParams -> Component`` with ``rx``, ``tx`` and ``function`` ports
        (:func:`boards.device.make_top_pcie7x`, the device with an external configuration
        space, or :func:`boards.device.make_standin`).

    Attributes
    ----------
    m_axis_rx : In(stream)
        The block's ``m_axis_rx_*``.
    s_axis_tx : Out(stream)
        The block's ``s_axis_tx_*``.
    cfg_command, cfg_dcommand, cfg_bus_number, cfg_device_number, cfg_function_number, cfg_interrupt_msixenable, cfg_interrupt_msixfm : In
        The block's configuration status outputs (:class:`~hdl.pcie.xilinx7.CfgStatus`).
    """

    def __init__(self, params: "DeviceParams", design_factory):
        self.params = params
        self.design_factory = design_factory
        width = params.tlp_width
        super().__init__({
            "m_axis_rx": In(axis_rx_signature(width)),
            "s_axis_tx": Out(axis_tx_signature(width)),
            "cfg_command": In(16),
            "cfg_dcommand": In(16),
            "cfg_bus_number": In(8),
            "cfg_device_number": In(5),
            "cfg_function_number": In(3),
            "cfg_interrupt_msixenable": In(1),
            "cfg_interrupt_msixfm": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = self.params.tlp_width
        m.submodules.rx_adapter = rxa = AxisRxAdapter(width=width)
        m.submodules.tx_adapter = txa = AxisTxAdapter(width=width)
        m.submodules.cfg_status = cfg = CfgStatus()
        m.submodules.design = design = self.design_factory(self.params)
        wiring.connect(m, wiring.flipped(self.m_axis_rx), rxa.axis)
        wiring.connect(m, rxa.rx, design.rx)
        wiring.connect(m, design.tx, txa.tx)
        wiring.connect(m, txa.axis, wiring.flipped(self.s_axis_tx))
        for name in ("cfg_command", "cfg_dcommand", "cfg_bus_number", "cfg_device_number",
                     "cfg_function_number", "cfg_interrupt_msixenable", "cfg_interrupt_msixfm"):
            m.d.comb += getattr(cfg, name).eq(getattr(self, name))
        m.d.comb += design.function.eq(cfg.function)
        return m
