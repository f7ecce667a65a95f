"""MSI-X Table and Pending Bit Array, and the memory writes that deliver the interrupts."""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .register_bus import RegisterBus
from .spec import (MSIX_ENTRY_BYTES, MSIX_MAX_VECTORS, TlpFmtType, check_tlp_width,
                   tlp_signature)

__all__ = ["MsixTable"]


class MsixTable(wiring.Component):
    """MSI-X Table, PBA and message generation (PCIe Base §6.1.4, §7.7.2).

    The Table is a register client: entry ``k`` is DWs ``4k .. 4k+3`` of the ``table``
    window (Message Address, Message Upper Address, Message Data, Vector Control); Vector
    Control bit 0 is the per-vector Mask Bit, other bits and DWs past the last entry read 0
    and ignore writes. The PBA is a read-only client (``pba`` window, two DWs): bit ``k`` is
    vector ``k``'s Pending Bit; writes are ignored.

    An interrupt request for vector ``k`` (a beat on ``request``, always accepted) sets its
    Pending Bit when MSI-X is enabled, and is dropped when it is not or ``k`` is out of range.
    A pending vector is delivered when MSI-X is enabled, the function is not masked (Function
    Mask), its own Mask Bit is clear and Bus Master Enable is set (clearing Bus Master Enable
    disables MSI-X messages, §7.5.1.1.3): one posted MemWr (3 DW header below 4 GiB, 4 DW
    otherwise, §2.2.4.1) of the entry's Message Data to its Message Address, 1 DW, byte
    enables 1111b, tag 0, TC0, no attributes. Its Pending Bit clears when the write is handed
    on (unless a new request for the same vector arrives in that cycle). So a request for a
    masked vector leaves its Pending Bit set, and unmasking delivers it (§6.1.4.5). Pending
    vectors are served round robin. Once a write is presented on ``tx`` it is sent even if the
    vector gets masked while ``tx`` is back-pressured.

    Reset: Pending Bits clear, Mask Bits set (§7.7.2.9 default), and the table memory is
    walked once, writing zeros to Message Address/Upper Address/Data (one entry per clock);
    until that finishes, table accesses wait and nothing is sent.

    Parameters
    ----------
    vectors : int
        Table Size, 1 .. :data:`~hdl.pcie.spec.MSIX_MAX_VECTORS`.
    width : int
        TLP stream width, 64 or 128.

    Attributes
    ----------
    table : In(RegisterBus.Signature(addr_width=...))
        Window of ``table_window_size`` bytes.
    pba : In(RegisterBus.Signature(addr_width=1))
        Window of ``pba_window_size`` (8) bytes.
    request : In(stream.Signature(unsigned(vector_width)))
    msix_enable, function_mask, bus_master_en : In(1)
    requester_id : In(16)
    tx : Out(tlp_signature(width))
    """

    def __init__(self, *, vectors: int, width: int = 64):
        if not isinstance(vectors, int) or not 1 <= vectors <= MSIX_MAX_VECTORS:
            raise ValueError(f"MSI-X vectors must be 1..{MSIX_MAX_VECTORS}, not {vectors!r}")
        self.vectors = vectors
        self.width = check_tlp_width(width)
        self.table_window_size = 1 << ceil_log2(vectors * MSIX_ENTRY_BYTES)
        self.pba_window_size = 8
        self.vector_width = max(1, ceil_log2(vectors))
        super().__init__({
            "table": In(RegisterBus.Signature(addr_width=ceil_log2(self.table_window_size // 4))),
            "pba": In(RegisterBus.Signature(addr_width=1)),
            "request": In(stream.Signature(unsigned(self.vector_width))),
            "msix_enable": In(1),
            "function_mask": In(1),
            "bus_master_en": In(1),
            "requester_id": In(16),
            "tx": Out(tlp_signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.vectors

        # Message Address, Upper Address and Data of each entry; the Mask Bits are flops so
        # that all of them can be looked at at once.
        m.submodules.mem = mem = Memory(shape=unsigned(96), depth=n, init=[])
        wp = mem.write_port(granularity=8)
        rp_bus = mem.read_port()
        rp_msg = mem.read_port()

        mask = Signal(n, init=(1 << n) - 1)
        pending = Signal(n)

        clearing = Signal(init=1)
        clear_idx = Signal(range(n))
        with m.If(clearing):
            m.d.comb += [wp.addr.eq(clear_idx), wp.data.eq(0), wp.en.eq((1 << 12) - 1)]
            m.d.sync += clear_idx.eq(clear_idx + 1)
            with m.If(clear_idx == n - 1):
                m.d.sync += clearing.eq(0)

        # --- Table window -----------------------------------------------------------------
        bus = self.table
        entry = bus.addr[2:]
        word = bus.addr[0:2]
        in_range = entry < n
        read_wait = Signal()
        m.d.comb += [rp_bus.addr.eq(entry), rp_bus.en.eq(1)]
        with m.If(bus.valid & ~clearing):
            with m.If(bus.write):
                m.d.comb += bus.ack.eq(1)
                with m.If(in_range):
                    with m.If(word == 3):
                        with m.If(bus.be[0]):
                            m.d.sync += mask.bit_select(entry, 1).eq(bus.w_data[0])
                    with m.Else():
                        m.d.comb += [
                            wp.addr.eq(entry),
                            wp.data.eq(Cat(bus.w_data, bus.w_data, bus.w_data)),
                            wp.en.eq(bus.be << (word * 4)),
                        ]
            with m.Elif(~read_wait):
                m.d.sync += read_wait.eq(1)
            with m.Else():
                # The read port has had the (held) address for a cycle.
                m.d.sync += read_wait.eq(0)
                m.d.comb += bus.ack.eq(1)
                with m.If(in_range):
                    with m.Switch(word):
                        for w in range(3):
                            with m.Case(w):
                                m.d.comb += bus.r_data.eq(rp_bus.data[32 * w:32 * w + 32])
                        with m.Case(3):
                            m.d.comb += bus.r_data.eq(mask.bit_select(entry, 1))

        # --- PBA window -------------------------------------------------------------------
        pba_bits = Cat(pending, Const(0, 64 - n))
        m.d.comb += [
            self.pba.ack.eq(self.pba.valid),
            self.pba.r_data.eq(Mux(self.pba.addr[0], pba_bits[32:64], pba_bits[0:32])),
        ]

        # --- Requests and delivery --------------------------------------------------------
        m.d.comb += self.request.ready.eq(1)
        set_bits = Signal(n)
        clear_bits = Signal(n)
        with m.If(self.request.valid & self.msix_enable & (self.request.payload < n)):
            m.d.comb += set_bits.eq(Const(1, n) << self.request.payload)
        m.d.sync += pending.eq((pending & ~clear_bits) | set_bits)

        can_send = self.msix_enable & ~self.function_mask & self.bus_master_en & ~clearing
        ready_bits = pending & ~mask
        rr = Signal(range(n))           # round-robin start: one past the last vector sent
        pick = Signal(range(n))
        found = Signal()
        at_or_above = Signal(n)
        m.d.comb += at_or_above.eq(ready_bits & ~((Const(1, n + 1) << rr) - 1)[:n])
        for k in reversed(range(n)):
            with m.If(ready_bits[k]):
                m.d.comb += [pick.eq(k), found.eq(1)]
        for k in reversed(range(n)):
            with m.If(at_or_above[k]):
                m.d.comb += pick.eq(k)

        vec = Signal(range(n))
        presented = Signal()
        # The message read port only reads in IDLE: while a message is offered on tx its
        # entry must stay as read, whatever becomes pending meanwhile (en is 1 by default).
        m.d.comb += [rp_msg.addr.eq(pick), rp_msg.en.eq(0)]
        hdr = self.tx.payload.hdr
        msg_addr = rp_msg.data[0:32]
        msg_upper = rp_msg.data[32:64]
        m.d.comb += [
            hdr.fmt_type.eq(Mux(msg_upper != 0, TlpFmtType.MWR64, TlpFmtType.MWR32)),
            hdr.length.eq(1),
            hdr.first_be.eq(0b1111),
            hdr.requester_id.eq(self.requester_id),
            hdr.addr.eq(Cat(Const(0, 2), msg_addr[2:32], msg_upper)),
            self.tx.payload.data.eq(rp_msg.data[64:96]),
            self.tx.payload.keep.eq(1),
            self.tx.payload.first.eq(1),
            self.tx.payload.last.eq(1),
        ]
        with m.FSM(name="sender"):
            with m.State("IDLE"):
                m.d.comb += rp_msg.en.eq(1)
                with m.If(can_send & found):
                    m.d.sync += vec.eq(pick)
                    m.next = "SEND"
            with m.State("SEND"):
                # The entry was read in the IDLE cycle and is held (en = 0) while offered.
                go = presented | (can_send & ~mask.bit_select(vec, 1))
                m.d.comb += self.tx.valid.eq(go)
                m.d.sync += presented.eq(go & ~self.tx.ready)
                with m.If(~go):
                    m.next = "IDLE"
                with m.Elif(self.tx.ready):
                    m.d.comb += clear_bits.eq(Const(1, n) << vec)
                    m.d.sync += rr.eq(Mux(vec == n - 1, 0, vec + 1))
                    m.next = "IDLE"
        return m
