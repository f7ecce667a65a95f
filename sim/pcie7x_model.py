"""The 7-series Integrated Block for PCI Express in simulation, for end-to-end cocotb runs.

:class:`Pcie7xBlockModel` is a cocotbext-pcie ``Endpoint`` (so a ``RootComplex`` enumerates
it) that behaves towards the host and towards the RTL as the hard block does (Xilinx PG054):

* it owns the Type 0 header and its capabilities at the block's fixed offsets: Power
  Management at 0x40, PCI Express at 0x60, MSI-X at 0x9C (table and PBA in BAR0 at the
  device's offsets), identity and BAR0 from the device parameters;
* configuration requests to the user-defined range 0xA8..0xFF go to the RTL as TLPs on
  ``m_axis_rx``, and the MSI-X capability's Next Pointer is 0xA8, as with ``PCI_CFG_Space``
  enabled at DW 0x2A (``boards/nitefury.py``);
* memory requests that hit BAR0 (with Memory Space enabled) and completions go to the RTL
  on ``m_axis_rx`` with the beat rules of :func:`sim.xilinx7.axis_rx_beats` (straddling at
  128 bits, random idle cycles); with Memory Space off a read gets Unsupported Request;
* every TLP the RTL hands to ``s_axis_tx`` (checked by :class:`sim.xilinx7.AxisTxCollector`)
  goes upstream: completions, DMA requests, MSI-X writes;
* ``cfg_command``, ``cfg_dcommand``, the bus/device/function numbers and the MSI-X enable and
  function mask follow the configuration registers, as the block's status outputs do.

The RTL side is a :class:`boards.pcie7x_device.Pcie7xDevice` (ports ``m_axis_rx__*``,
``s_axis_tx__*``, ``cfg_*``, clock ``clk``).
"""
from __future__ import annotations

import collections
import logging
import random

import cocotb
from cocotb.triggers import Event, ReadOnly, RisingEdge
from cocotbext.pcie.core import Endpoint
from cocotbext.pcie.core.caps import MsixCapability
from cocotbext.pcie.core.tlp import Tlp, TlpType

from hdl.pcie.xilinx7.interface import axis_rx_layout, axis_tx_layout
from sim.layout import pack, unpack
from sim.xilinx7 import AxisTxCollector, axis_rx_beats

__all__ = ["Pcie7xBlockModel", "PM_CAP", "PCIE_CAP", "MSIX_CAP", "USER_CFG_START"]

log = logging.getLogger(__name__)

PM_CAP, PCIE_CAP, MSIX_CAP = 0x40, 0x60, 0x9C
USER_CFG_START, USER_CFG_END = 0xA8, 0x100

_MEM_TYPES = (TlpType.MEM_READ, TlpType.MEM_READ_64, TlpType.MEM_WRITE, TlpType.MEM_WRITE_64)
_CPL_TYPES = (TlpType.CPL, TlpType.CPL_DATA, TlpType.CPL_LOCKED, TlpType.CPL_LOCKED_DATA)


class Pcie7xBlockModel(Endpoint):
    """The hard block: configuration space on the host side, AXI4-Stream on the RTL side.

    Parameters
    ----------
    dut
        The cocotb handle of a ``Pcie7xDevice``.
    params
        The ``boards.device.DeviceParams`` the RTL was built with.
    rng : random.Random
        Source of idle cycles on ``m_axis_rx`` and back-pressure on ``s_axis_tx``.
    rx_idle, tx_ready : float
        Chance of an idle cycle before a receive beat; chance of ``tready`` each cycle.
    """

    def __init__(self, dut, params, *, rng: random.Random, rx_idle: float = 0.2,
                 tx_ready: float = 0.8):
        super().__init__()
        self.dut = dut
        self.params = params
        self.rng = rng
        self.rx_idle = rx_idle
        self.tx_ready = tx_ready
        self.width = params.tlp_width

        self.vendor_id = params.vendor_id
        self.device_id = params.device_id
        self.revision_id = params.revision_id
        self.class_code = params.class_code
        self.subsystem_vendor_id = params.subsystem_vendor_id
        self.subsystem_id = params.subsystem_id
        self.interrupt_pin = 0
        self.configure_bar(0, params.bar0_size, ext=params.bar0_64bit)

        self.register_capability(self.pm_cap, offset=PM_CAP // 4)
        self.register_capability(self.pcie_cap, offset=PCIE_CAP // 4)
        self.pcie_cap.max_payload_size_supported = (params.max_payload_size // 128).bit_length() - 1
        self.pcie_cap.extended_tag_supported = params.ext_tag
        self.msix_cap = None
        if params.msix:
            self.msix_cap = MsixCapability()
            self.msix_cap.msix_table_size = params.msix_vectors - 1
            self.msix_cap.msix_table_bar_indicator_register = 0
            self.msix_cap.msix_table_offset = params.msix_table_offset
            self.msix_cap.msix_pba_bar_indicator_register = 0
            self.msix_cap.msix_pba_offset = params.msix_pba_offset
            self.register_capability(self.msix_cap, offset=MSIX_CAP // 4)

        for fmt_type in _MEM_TYPES:
            self.register_rx_tlp_handler(fmt_type, self._memory_request)

        self._rx_queue: list[Tlp] = []
        self._rx_event = Event()
        self._tx_queue: collections.deque[Tlp] = collections.deque()
        self._tx_event = Event()
        self.collector = AxisTxCollector(self.width)
        self.to_rtl = 0
        self.from_rtl = 0

    def start(self) -> None:
        """Start driving the RTL's ports (after the clock runs)."""
        cocotb.start_soon(self._rx_driver())
        cocotb.start_soon(self._tx_monitor())
        cocotb.start_soon(self._upstream_sender())

    # --- configuration space ----------------------------------------------------------------

    async def read_capability_register(self, reg):
        value = await super().read_capability_register(reg)
        last = self.msix_cap or self.pcie_cap
        if reg == last.offset:
            # The block's last capability links to the user-defined space.
            value = (value & ~0xFF00) | (USER_CFG_START << 8)
        return value

    def _user_cfg(self, tlp: Tlp) -> bool:
        return USER_CFG_START <= (tlp.address & 0xFFC) < USER_CFG_END

    async def handle_config_0_read_tlp(self, tlp):
        if self._user_cfg(tlp):
            self._send_to_rtl(tlp)
        else:
            await super().handle_config_0_read_tlp(tlp)

    async def handle_config_0_write_tlp(self, tlp):
        if self._user_cfg(tlp):
            self._send_to_rtl(tlp)
        else:
            await super().handle_config_0_write_tlp(tlp)

    # --- TLPs to the RTL --------------------------------------------------------------------

    async def handle_tlp(self, tlp):
        if tlp.fmt_type in _CPL_TYPES:
            # The function issues no requests of its own: every completion is the RTL's.
            tlp.release_fc()
            self._send_to_rtl(tlp)
        else:
            await super().handle_tlp(tlp)

    async def _memory_request(self, tlp):
        if self.memory_space_enable:
            self._send_to_rtl(tlp)
        elif tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64):
            await self.send(Tlp.create_ur_completion_for_tlp(tlp, self.pcie_id))

    def _send_to_rtl(self, tlp: Tlp) -> None:
        self._rx_queue.append(tlp)
        self._rx_event.set()

    def _cfg_values(self) -> dict[str, int]:
        pcie = self.pcie_cap
        command = (int(self.memory_space_enable) << 1 | int(self.bus_master_enable) << 2 |
                   int(self.interrupt_disable) << 10)
        dcommand = (pcie.max_payload_size << 5 | int(pcie.extended_tag_field_enable) << 8 |
                    pcie.max_read_request_size << 12)
        msix = self.msix_cap
        return {
            "cfg_command": command, "cfg_dcommand": dcommand,
            "cfg_bus_number": self.bus_num, "cfg_device_number": self.device_num,
            "cfg_function_number": self.function_num,
            "cfg_interrupt_msixenable": int(bool(msix and msix.msix_enable)),
            "cfg_interrupt_msixfm": int(bool(msix and msix.msix_function_mask)),
        }

    async def _rx_driver(self):
        dut = self.dut
        layout = axis_rx_layout(self.width)
        beats: collections.deque = collections.deque()
        while True:
            await RisingEdge(dut.clk)
            for name, value in self._cfg_values().items():
                getattr(dut, name).value = value
            if not beats and self._rx_queue:
                tlps, self._rx_queue = self._rx_queue, []
                beats.extend(axis_rx_beats([t.pack() for t in tlps], width=self.width,
                                           rng=self.rng, idle=self.rx_idle))
                self.to_rtl += len(tlps)
            beat = beats[0] if beats else None
            dut.m_axis_rx__valid.value = beat is not None
            if beat is not None:
                dut.m_axis_rx__payload.value = pack(layout, beat)
            await ReadOnly()
            if beats and (beat is None or dut.m_axis_rx__ready.value):
                beats.popleft()

    # --- TLPs from the RTL ------------------------------------------------------------------

    async def _tx_monitor(self):
        dut = self.dut
        layout = axis_tx_layout(self.width)
        while True:
            await RisingEdge(dut.clk)
            dut.s_axis_tx__ready.value = self.rng.random() < self.tx_ready
            await ReadOnly()
            if dut.s_axis_tx__valid.value and dut.s_axis_tx__ready.value:
                beat = unpack(layout, dut.s_axis_tx__payload.value.to_unsigned())
                data = self.collector.push(beat)
                if data is not None:
                    self._tx_queue.append(Tlp.unpack(data))
                    self._tx_event.set()

    async def _upstream_sender(self):
        while True:
            if not self._tx_queue:
                self._tx_event.clear()
                await self._tx_event.wait()
                continue
            tlp = self._tx_queue.popleft()
            self.from_rtl += 1
            await self.send(tlp)
