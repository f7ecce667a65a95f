"""A small stand-in for the device: what ``python -m boards.build --standin`` builds."""
from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.pcie.spec import (CplStatus, FunctionControl, TlpCplDW1, TlpCplDW2, TlpDW0,
                           TlpFmtType, raw_tlp_signature)

from .config_space import PCIE7X_USER_CFG_START, USER_CFG_END, virtio_capabilities

if TYPE_CHECKING:
    from .device import DeviceParams

__all__ = ["StandInFunction"]

_SCRATCH_DWS = 1024     # 4 KiB, mirrored over BAR0


def _byte_count_1dw(first_be: int) -> int:
    """Byte Count of the completion of a 1-DW read (PCIe Base §2.2.9, "Byte Count" rules)."""
    if first_be == 0:
        return 1
    low = (first_be & -first_be).bit_length() - 1
    return first_be.bit_length() - low


def _first_byte(first_be: int) -> int:
    return 0 if first_be == 0 else (first_be & -first_be).bit_length() - 1


class StandInFunction(wiring.Component):
    """A small PCIe function with the device's TLP ports, for a quick check of a board's flow.

    It is a real TLP endpoint, so a board build exercises the PCIe core, the adapters and
    the reports end to end, and a board brought up with it shows the device's identity and
    virtio capability list to the host:

    * single-DW memory writes to BAR0 store into a 4 KiB scratch memory (byte enables honoured,
      mirrored over BAR0); single-DW memory reads return it in a CplD;
    * configuration reads of the user-defined configuration range (0xA8..0xFF, where the
      7-series block forwards them) return the virtio capability chain of
      :func:`boards.config_space.virtio_capabilities`; configuration writes complete
      successfully and change nothing;
    * every other non-posted request gets an Unsupported Request completion (including
      memory reads longer than one DW); other posted requests and completions are dropped.

    It is not the virtio-blk device: the BAR0 registers are plain memory, there is no DMA and
    no interrupt. The raw TLP parsing here is the stand-in's own; the real device parses TLPs
    only in its depacketizer.

    Reset: idle, any partial TLP dropped; the scratch memory keeps its contents.

    Parameters
    ----------
    params : DeviceParams
        ``tlp_width``, BAR0 size and the capability layout are used.

    Attributes
    ----------
    rx : In(raw TLP stream)
    tx : Out(raw TLP stream)
    function : In(FunctionControl)
        The completer ID comes from ``requester_id``; memory requests are served only while
        ``memory_space_en`` is set (otherwise reads get UR, writes are dropped).
    """

    def __init__(self, params: "DeviceParams"):
        self.params = params
        self.width = params.tlp_width
        self.cap_bytes = virtio_capabilities(params, PCIE7X_USER_CFG_START)
        super().__init__({
            "rx": In(raw_tlp_signature(self.width)),
            "tx": Out(raw_tlp_signature(self.width)),
            "function": In(FunctionControl),
        })

    def elaborate(self, platform):
        m = Module()
        rx, tx, fn = self.rx, self.tx, self.function
        lanes = self.width // 32

        # --- capture DWs 0..4 of the TLP (the header and the first payload DW) ---------------
        h = [Signal(32, name=f"h{i}") for i in range(5)]
        beat = Signal(range(4))    # beat of the TLP, saturated past the captured DWs
        for b in range((5 + lanes - 1) // lanes):
            for lane in range(lanes):
                dw = b * lanes + lane
                if dw < 5:
                    with m.If(rx.valid & rx.ready & (Mux(rx.payload.first, 0, beat) == b)):
                        m.d.sync += h[dw].eq(rx.payload.data[32 * lane:32 * lane + 32])
        with m.If(rx.valid & rx.ready):
            m.d.sync += beat.eq(Mux(rx.payload.last, 0,
                                    Mux(rx.payload.first, 1, Mux(beat == 3, 3, beat + 1))))

        dw0 = TlpDW0(h[0])
        fmt_type = dw0.fmt_type
        first_be = h[1][0:4]
        tag = h[1][8:16]
        requester_id = h[1][16:32]
        is64 = fmt_type.as_value()[5]
        addr_lo = Mux(is64, h[3], h[2])
        wdata = Mux(is64, h[4], h[3])
        cfg_offset = h[2][0:12]

        is_mrd = (fmt_type == TlpFmtType.MRD32) | (fmt_type == TlpFmtType.MRD64)
        is_mwr = (fmt_type == TlpFmtType.MWR32) | (fmt_type == TlpFmtType.MWR64)
        is_cfgrd = fmt_type == TlpFmtType.CFGRD0
        is_cfgwr = fmt_type == TlpFmtType.CFGWR0
        non_posted = Signal()
        m.d.comb += non_posted.eq(
            is_mrd | is_cfgrd | is_cfgwr |
            (fmt_type == TlpFmtType.MRDLK32) | (fmt_type == TlpFmtType.MRDLK64) |
            (fmt_type == TlpFmtType.IORD) | (fmt_type == TlpFmtType.IOWR) |
            (fmt_type == TlpFmtType.CFGRD1) | (fmt_type == TlpFmtType.CFGWR1))
        one_dw = dw0.length == 1
        mem_ok = fn.memory_space_en & one_dw

        # --- storage ---------------------------------------------------------------------------
        m.submodules.scratch = scratch = Memory(shape=32, depth=_SCRATCH_DWS, init=[])
        wr = scratch.write_port(granularity=8)
        rd = scratch.read_port()
        cap_dws = [int.from_bytes(self.cap_bytes[i:i + 4], "little")
                   for i in range(0, len(self.cap_bytes), 4)]
        cap_dws += [0] * ((USER_CFG_END - PCIE7X_USER_CFG_START) // 4 - len(cap_dws))
        m.submodules.caps = caps = Memory(shape=32, depth=len(cap_dws), init=cap_dws)
        cap_rd = caps.read_port()
        cap_index = (cfg_offset - PCIE7X_USER_CFG_START)[2:8]
        in_user_cfg = (cfg_offset >= PCIE7X_USER_CFG_START) & (cfg_offset < USER_CFG_END)
        m.d.comb += [
            rd.addr.eq(addr_lo[2:12]),
            cap_rd.addr.eq(cap_index),
            wr.addr.eq(addr_lo[2:12]),
            wr.data.eq(wdata),
        ]

        # --- completion ------------------------------------------------------------------------
        cpl_data = Signal()
        cpl_status = Signal(CplStatus)
        bc_table = Array(Const(_byte_count_1dw(be), 12) for be in range(16))
        la_table = Array(Const(_first_byte(be), 2) for be in range(16))
        hdr = [Signal(32, name=f"cpl{i}") for i in range(3)]
        payload = Signal(32)
        c0, c1, c2 = TlpDW0(hdr[0]), TlpCplDW1(hdr[1]), TlpCplDW2(hdr[2])
        m.d.comb += [
            c0.fmt_type.eq(Mux(cpl_data, TlpFmtType.CPLD, TlpFmtType.CPL)),
            c0.tc.eq(dw0.tc),
            c0.attr.eq(dw0.attr),
            c0.attr2.eq(dw0.attr2),
            c0.length.eq(cpl_data),
            c1.completer_id.eq(fn.requester_id),
            c1.status.eq(cpl_status),
            c1.byte_count.eq(Mux(is_mrd & (cpl_status == CplStatus.SC),
                                 bc_table[first_be], 4)),
            c2.requester_id.eq(requester_id),
            c2.tag.eq(tag),
            c2.lower_address.eq(Mux(is_mrd & (cpl_status == CplStatus.SC),
                                    Cat(la_table[first_be], addr_lo[2:7]), 0)),
            payload.eq(Mux(is_cfgrd, Mux(in_user_cfg, cap_rd.data, 0), rd.data)),
        ]
        dws = [hdr[0], hdr[1], hdr[2], payload]

        with m.FSM():
            with m.State("RECEIVE"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid & rx.payload.last):
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                # The header registers are complete; the memories read them this cycle.
                with m.If(is_mwr & mem_ok):
                    m.d.comb += wr.en.eq(first_be)
                m.d.sync += [
                    cpl_data.eq(is_mrd & mem_ok | is_cfgrd),
                    cpl_status.eq(Mux(is_mrd & ~mem_ok | ~(is_mrd | is_cfgrd | is_cfgwr),
                                      CplStatus.UR, CplStatus.SC)),
                ]
                with m.If(non_posted):
                    m.next = "SEND0"
                with m.Else():
                    m.next = "RECEIVE"
            with m.State("SEND0"):
                m.d.comb += [
                    tx.valid.eq(1),
                    tx.payload.data.eq(Cat(*dws[:lanes])),
                    tx.payload.first.eq(1),
                ]
                if lanes == 4:
                    m.d.comb += [tx.payload.keep.eq(Mux(cpl_data, 0b1111, 0b0111)),
                                 tx.payload.last.eq(1)]
                    with m.If(tx.ready):
                        m.next = "RECEIVE"
                else:
                    m.d.comb += tx.payload.keep.eq(0b11)
                    with m.If(tx.ready):
                        m.next = "SEND1"
            if lanes == 2:
                with m.State("SEND1"):
                    m.d.comb += [
                        tx.valid.eq(1),
                        tx.payload.data.eq(Cat(dws[2], dws[3])),
                        tx.payload.keep.eq(Mux(cpl_data, 0b11, 0b01)),
                        tx.payload.last.eq(1),
                    ]
                    with m.If(tx.ready):
                        m.next = "RECEIVE"
        return m
