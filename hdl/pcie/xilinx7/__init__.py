"""The Xilinx 7-series Integrated Block for PCI Express (``pcie_7x``, Xilinx PG054) behind the
project's raw TLP streams.

* :mod:`.interface`: the block's AXI4-Stream user interface (PG054 "Transaction Interface")
  as Amaranth stream signatures and ``tuser`` layouts, and the per-DW byte order helper;
* :class:`.AxisRxAdapter`: ``m_axis_rx_*`` (64 or 128 bits, straddled TLPs) to the raw stream;
* :class:`.AxisTxAdapter`: the raw stream to ``s_axis_tx_*``;
* :class:`.CfgStatus`: the block's ``cfg_*`` status outputs to :data:`~hdl.pcie.spec.FunctionControl`.

The block owns the Type 0 header and its own capabilities; ``docs/boards.md`` says how the
virtio vendor capabilities and the MSI-X table reach the host through it.
"""
from .axis_rx_adapter import AxisRxAdapter
from .axis_tx_adapter import AxisTxAdapter
from .cfg_status import CfgStatus

__all__ = ["AxisRxAdapter", "AxisTxAdapter", "CfgStatus"]
