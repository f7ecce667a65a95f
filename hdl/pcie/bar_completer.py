"""Completer for requests that are not Type 0 configuration requests: BAR0 MMIO and URs."""
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .register_bus import RegisterBus, RegisterWindow
from .spec import CplStatus, TlpFmtType, TlpHeader, check_tlp_width, tlp_signature

__all__ = ["BarCompleter", "BarEvents", "BarCounters"]

BarEvents = data.StructLayout({
    "ur": 1,        # an Unsupported Request was detected (Device Status bit 3)
    "ca": 1,        # a Completer Abort was sent (Status: Signaled Target Abort)
})
"""One-cycle pulses for the configuration space's error logging."""

BarCounters = data.StructLayout({
    "posted_dropped": 16,   # posted requests not acted on (unmapped, Memory Space off, messages)
    "poisoned_dropped": 16, # memory writes dropped because EP was set
    "ur_sent": 16,          # completions with status UR
    "ca_sent": 16,          # completions with status CA (reads longer than max_read_dw)
})
"""Free-running, wrapping event counters."""


class BarCompleter(wiring.Component):
    """Answers the requests the router does not send to configuration space.

    Memory reads and writes (32- and 64-bit addresses, §2.2.4.1) that hit BAR0 while Memory
    Space is enabled, and whose DWs all fall into one register window, become register-bus
    accesses on that window, one DW at a time in address order (``register_bus.py``): DW 0
    with First DW BE, the last DW with Last DW BE, DWs between with 1111b; DWs with no byte
    enabled are skipped (reads return 0 there). Memory reads are answered with one CplD
    (status SC, Byte Count and Lower Address per §2.2.9 / §2.3.1.1, completer ID from
    ``completer_id``, requester ID, tag, TC and attributes copied from the request) once all
    their DWs have been read; the CplD fits any Max_Payload_Size because reads are limited to
    ``max_read_dw`` <= 32 DW.

    Everything else:

    * a memory read longer than ``max_read_dw``: Cpl with status CA (the request violates
      the completer's programming model, §2.3.1), no register is read;
    * a non-posted request that misses (Memory Space off, not in BAR0 or the BAR's address
      range, not inside one window) or is not a memory read (I/O, Type 1 configuration,
      AtomicOp, locked read answered with CplLk): Cpl with status UR (§2.3.1);
    * a memory write that misses, or any message: dropped and counted (posted, no completion);
    * a poisoned memory write (EP set): dropped and counted (§2.7.2.2), never reaches a client.

    For UR/CA answers to memory reads Byte Count and Lower Address are computed as for a
    successful completion; for other requests Byte Count is 4 and Lower Address 0.

    Reset: idle, counters zero. A register access in progress is abandoned.

    Parameters
    ----------
    windows : list of RegisterWindow
        Windows of BAR0, non-overlapping, inside ``bar_size``.
    bar_size : int
        BAR0 size in bytes (power of two).
    bar_64bit : bool
        BAR0 is a 64-bit BAR (compare all address bits); else addresses above 4 GiB miss.
    max_read_dw : int
        Longest memory read served, 1 .. 32 DW.
    decode_bar : bool
        Compare addresses with ``bar_base`` (default). False: every memory request is a BAR0
        hit at offset ``address % bar_size`` and there is no ``bar_base`` port; for a PCIe
        core that owns the BARs and hands over only requests that hit BAR0 (the function
        having no other BAR).
    width : int
        TLP stream width, 64 or 128.

    Attributes
    ----------
    rx : In(tlp_signature(width))
    tx : Out(tlp_signature(width))
    completer_id : In(16)
    memory_enable : In(1)
        Command.Memory Space and the function in D0.
    bar_base : In(64)
        BAR0 address as programmed (bits below log2(bar_size) are ignored); only with
        ``decode_bar``.
    windows : Out(Signature({name: Out(RegisterBus.Signature(...))}))
    events : Out(BarEvents)
    counters : Out(BarCounters)
    """

    def __init__(self, *, windows, bar_size: int, bar_64bit: bool = False,
                 max_read_dw: int = 16, decode_bar: bool = True, width: int = 64):
        self.width = check_tlp_width(width)
        if not isinstance(decode_bar, bool):
            raise TypeError(f"decode_bar must be a bool, not {decode_bar!r}")
        if not isinstance(bar_size, int) or bar_size < 128 or bar_size & (bar_size - 1):
            raise ValueError(f"BAR size must be a power of two of at least 128 bytes, "
                             f"not {bar_size!r}")
        windows = list(windows)
        if not windows:
            raise ValueError("the BAR completer needs at least one register window")
        names = set()
        for i, w in enumerate(windows):
            if not isinstance(w, RegisterWindow):
                raise TypeError(f"windows must be RegisterWindow objects, not {w!r}")
            if w.end > bar_size:
                raise ValueError(f"register window {w.name!r} ends at {w.end:#x}, beyond the "
                                 f"{bar_size:#x}-byte BAR")
            if w.name in names:
                raise ValueError(f"two register windows are named {w.name!r}")
            names.add(w.name)
            for other in windows[:i]:
                if w.overlaps(other):
                    raise ValueError(f"register windows {other.name!r} and {w.name!r} overlap")
        if not isinstance(max_read_dw, int) or not 1 <= max_read_dw <= 32:
            raise ValueError(f"max_read_dw must be 1..32 (a read must fit one completion of "
                             f"the smallest Max_Payload_Size, 128 bytes), not {max_read_dw!r}")
        self.windows_list = windows
        self.bar_size = bar_size
        self.bar_64bit = bool(bar_64bit)
        self.max_read_dw = max_read_dw
        self.decode_bar = decode_bar
        members = {
            "rx": In(tlp_signature(width)),
            "tx": Out(tlp_signature(width)),
            "completer_id": In(16),
            "memory_enable": In(1),
            "windows": Out(wiring.Signature({
                w.name: Out(RegisterBus.Signature(addr_width=w.addr_width)) for w in windows})),
            "events": Out(BarEvents),
            "counters": Out(BarCounters),
        }
        if decode_bar:
            members["bar_base"] = In(64)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        lanes = self.width // 32
        rx, tx = self.rx, self.tx
        hdr = rx.payload.hdr
        bar_bits = ceil_log2(self.bar_size)
        dw_bits = bar_bits - 2

        # --- Classification of the TLP at the input ---------------------------------------
        ft = hdr.fmt_type
        ftv = ft.as_value()
        mem_read = (ft == TlpFmtType.MRD32) | (ft == TlpFmtType.MRD64)
        locked_read = (ft == TlpFmtType.MRDLK32) | (ft == TlpFmtType.MRDLK64)
        mem_write = (ft == TlpFmtType.MWR32) | (ft == TlpFmtType.MWR64)
        message = ftv[3:5] == 0b10
        prefix = ftv[5:8] == 0b100
        posted = mem_write | message | prefix

        length = Signal(11)
        m.d.comb += length.eq(Cat(hdr.length, hdr.length == 0))
        addr = hdr.addr
        if not self.decode_bar:
            bar_hit = Const(1, 1)
        elif self.bar_64bit:
            bar_hit = addr[bar_bits:64] == self.bar_base[bar_bits:64]
        else:
            bar_hit = (addr[32:64] == 0) & (addr[bar_bits:32] == self.bar_base[bar_bits:32])
        first_dw = addr[2:bar_bits]
        last_dw = Signal(dw_bits + 11)
        m.d.comb += last_dw.eq(first_dw + length - 1)
        win_hit = Signal(len(self.windows_list))
        win_idx = Signal(range(max(2, len(self.windows_list))))
        for k, w in enumerate(self.windows_list):
            base = (w.offset // 4) >> w.dw_bits
            m.d.comb += win_hit[k].eq(((first_dw >> w.dw_bits) == base)
                                      & ((last_dw >> w.dw_bits) == base))
            with m.If(win_hit[k]):
                m.d.comb += win_idx.eq(k)
        hit = self.memory_enable & bar_hit & win_hit.any()

        # Byte Count and Lower Address of a memory read (§2.3.1.1, Tables 2-36 and 2-37).
        first_be, last_be = hdr.first_be, hdr.last_be
        first_skip = Signal(2)
        with m.Switch(first_be):
            for be in range(16):
                with m.Case(be):
                    m.d.comb += first_skip.eq(
                        next((i for i in range(4) if be >> i & 1), 0))
        end_be = Mux(length == 1, first_be, last_be)
        last_skip = Signal(2)
        with m.Switch(end_be):
            for be in range(16):
                with m.Case(be):
                    m.d.comb += last_skip.eq(
                        next((i for i in range(4) if be >> (3 - i) & 1), 0))
        read_byte_count = Signal(13)
        with m.If((length == 1) & (first_be == 0)):
            m.d.comb += read_byte_count.eq(1)
        with m.Else():
            m.d.comb += read_byte_count.eq((length << 2) - first_skip - last_skip)

        # --- Latched request --------------------------------------------------------------
        req = Signal(TlpHeader)
        req_len = Signal(11)
        byte_count = Signal(12)
        lower_address = Signal(7)
        cur_dw = Signal(dw_bits)        # BAR-relative DW index of the current access
        count = Signal(11)              # DWs of this TLP handled so far
        win = Signal.like(win_idx)
        status = Signal(CplStatus)
        locked = Signal()

        def latch(read_fields=None):
            """Latch the request; ``read_fields``: when Byte Count / Lower Address are a read's."""
            m.d.sync += [
                req.eq(hdr), req_len.eq(length), win.eq(win_idx), cur_dw.eq(first_dw),
                count.eq(0), locked.eq(locked_read),
                byte_count.eq(4), lower_address.eq(0),
            ]
            if read_fields is not None:
                with m.If(read_fields):
                    m.d.sync += [byte_count.eq(read_byte_count),
                                 lower_address.eq(Cat(first_skip, addr[2:7]))]

        # --- Register bus master ----------------------------------------------------------
        bus_valid = Signal()
        bus_write = Signal()
        bus_be = Signal(4)
        bus_wdata = Signal(32)
        bus_ack = Signal()
        bus_rdata = Signal(32)
        for k, w in enumerate(self.windows_list):
            port = getattr(self.windows, w.name)
            m.d.comb += [
                port.valid.eq(bus_valid & (win == k)),
                port.addr.eq(cur_dw[:w.addr_width] if w.dw_bits else 0),
                port.write.eq(bus_write),
                port.be.eq(bus_be),
                port.w_data.eq(bus_wdata),
            ]
            with m.If(win == k):
                m.d.comb += [bus_ack.eq(port.ack), bus_rdata.eq(port.r_data)]

        # Byte enables of DW `count` (§2.2.5): First DW BE, Last DW BE, all in between.
        cur_be = Signal(4)
        with m.If(count == 0):
            m.d.comb += cur_be.eq(req.first_be)
        with m.Elif(count == req_len - 1):
            m.d.comb += cur_be.eq(req.last_be)
        with m.Else():
            m.d.comb += cur_be.eq(0b1111)

        # --- Read buffer ------------------------------------------------------------------
        depth = (self.max_read_dw + lanes - 1) // lanes
        m.submodules.buf = buf = Memory(shape=self.width, depth=depth, init=[])
        buf_w = buf.write_port(granularity=32)
        buf_r = buf.read_port(transparent_for=(buf_w,))
        beat = Signal(range(depth + 1))
        n_beats = Signal(range(depth + 1))
        m.d.comb += [
            buf_w.addr.eq(count // lanes),
            buf_w.data.eq(Cat(*[bus_rdata & Mux(cur_be != 0, 0xFFFF_FFFF, 0)] * lanes)),
            buf_r.addr.eq(0),
        ]

        # --- Counters and events ----------------------------------------------------------
        cnt = self.counters
        ev = self.events

        respond_after_drain = Signal()

        with m.FSM(name="state"):
            with m.State("IDLE"):
                with m.If(rx.valid & rx.payload.first):
                    with m.If(mem_write & hit & ~hdr.ep):
                        latch()
                        m.next = "WRITE"
                    with m.Elif(posted):
                        m.d.comb += rx.ready.eq(1)
                        with m.If(hdr.ep & mem_write):
                            m.d.sync += cnt.poisoned_dropped.eq(cnt.poisoned_dropped + 1)
                        with m.Else():
                            m.d.sync += cnt.posted_dropped.eq(cnt.posted_dropped + 1)
                            m.d.comb += ev.ur.eq(mem_write)
                        with m.If(~rx.payload.last):
                            m.d.sync += respond_after_drain.eq(0)
                            m.next = "DRAIN"
                    with m.Else():
                        m.d.comb += rx.ready.eq(1)
                        latch(mem_read | locked_read)
                        with m.If(mem_read & hit & (length <= self.max_read_dw)):
                            m.next = "READ"
                        with m.Else():
                            with m.If(mem_read & hit):
                                m.d.sync += status.eq(CplStatus.CA)
                            with m.Else():
                                m.d.sync += status.eq(CplStatus.UR)
                            with m.If(rx.payload.last):
                                m.next = "RESPOND"
                            with m.Else():
                                m.d.sync += respond_after_drain.eq(1)
                                m.next = "DRAIN"
                with m.Elif(rx.valid):
                    # A beat that does not start a TLP here belongs to nothing: discard it.
                    m.d.comb += rx.ready.eq(1)

            with m.State("DRAIN"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid & rx.payload.last):
                    with m.If(respond_after_drain):
                        m.next = "RESPOND"
                    with m.Else():
                        m.next = "IDLE"

            with m.State("WRITE"):
                lane = Signal(range(lanes))
                present = rx.payload.keep.bit_select(lane, 1)
                m.d.comb += [
                    bus_write.eq(1),
                    bus_be.eq(cur_be),
                    bus_wdata.eq(rx.payload.data.word_select(lane, 32)),
                    bus_valid.eq(rx.valid & present & (cur_be != 0)),
                ]
                step = rx.valid & present & ((cur_be == 0) | bus_ack)
                next_present = Signal()
                m.d.comb += next_present.eq((lane != lanes - 1)
                                            & rx.payload.keep.bit_select(lane + 1, 1))
                with m.If(step):
                    m.d.sync += [count.eq(count + 1), cur_dw.eq(cur_dw + 1)]
                end_of_beat = rx.valid & (~present | (step & ~next_present))
                with m.If(step & next_present):
                    m.d.sync += lane.eq(lane + 1)
                with m.If(end_of_beat):
                    m.d.comb += rx.ready.eq(1)
                    m.d.sync += lane.eq(0)
                    with m.If(rx.payload.last):
                        m.next = "IDLE"

            with m.State("READ"):
                m.d.comb += [
                    bus_write.eq(0),
                    bus_be.eq(cur_be),
                    bus_valid.eq(cur_be != 0),
                ]
                step = (cur_be == 0) | bus_ack
                with m.If(step):
                    m.d.comb += buf_w.en.eq(Const(1, lanes) << (count % lanes))
                    m.d.sync += [count.eq(count + 1), cur_dw.eq(cur_dw + 1)]
                    with m.If(count == req_len - 1):
                        m.d.sync += [beat.eq(0),
                                     n_beats.eq((req_len + lanes - 1) // lanes)]
                        m.next = "CPLD"

            with m.State("CPLD"):
                # The read port shows the beat addressed in the previous cycle; it moves to
                # the next beat exactly when the current one is taken.
                xfer = tx.valid & tx.ready
                m.d.comb += buf_r.addr.eq(Mux(xfer, beat + 1, beat))
                th = tx.payload.hdr
                m.d.comb += [
                    tx.valid.eq(1),
                    th.fmt_type.eq(TlpFmtType.CPLD),
                    th.length.eq(req_len[:10]),
                    tx.payload.data.eq(buf_r.data),
                    tx.payload.keep.eq(Cat(*((beat * lanes + i) < req_len for i in range(lanes)))),
                    tx.payload.first.eq(beat == 0),
                    tx.payload.last.eq(beat == n_beats - 1),
                ]
                with m.If(xfer):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == n_beats - 1):
                        m.next = "IDLE"

            with m.State("RESPOND"):
                th = tx.payload.hdr
                m.d.comb += [
                    tx.valid.eq(1),
                    th.fmt_type.eq(Mux(locked, TlpFmtType.CPLLK, TlpFmtType.CPL)),
                    th.status.eq(status),
                    tx.payload.first.eq(1),
                    tx.payload.last.eq(1),
                ]
                with m.If(tx.ready):
                    with m.If(status == CplStatus.CA):
                        m.d.comb += ev.ca.eq(1)
                        m.d.sync += cnt.ca_sent.eq(cnt.ca_sent + 1)
                    with m.Else():
                        m.d.comb += ev.ur.eq(1)
                        m.d.sync += cnt.ur_sent.eq(cnt.ur_sent + 1)
                    m.next = "IDLE"

        # Fields common to every completion sent.
        th = tx.payload.hdr
        m.d.comb += [
            th.requester_id.eq(req.requester_id),
            th.tag.eq(req.tag),
            th.tc.eq(req.tc),
            th.attr.eq(req.attr),
            th.completer_id.eq(self.completer_id),
            th.byte_count.eq(byte_count),
            th.lower_address.eq(lower_address),
        ]
        return m
