from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec import check_tlp_width, raw_tlp_signature
from .interface import axis_rx_signature, swap_payload_dws

__all__ = ["AxisRxAdapter"]


class AxisRxAdapter(wiring.Component):
    """The 7-series block's receive stream (``m_axis_rx_*``) as a raw TLP stream.

    Every TLP the block delivers leaves on ``rx`` whole and in order, realigned so that its
    DW 0 is in lane 0 of its first beat, with per-DW ``keep``, ``first`` and ``last``, and its
    payload DWs byte-reversed into host-memory order (see :mod:`.interface` for the block's
    byte order and :mod:`hdl.pcie.spec` for the raw stream's).

    At 64 bits the block already starts every TLP in lane 0: the adapter is combinational
    and adds no latency or bubble. At 128 bits a TLP may start in DW 2 and share its first
    beat with the end of the previous TLP (PG054 ``is_sof``/``is_eof``); the adapter then
    re-pairs quad-words so that the TLP starts in lane 0. Such a TLP that also ends in the
    upper half of a beat needs one more output beat than it took input beats, and the adapter
    holds ``axis`` for that one cycle; otherwise one beat in gives at most one beat out, in the
    same cycle. ``tlast``/``tkeep`` are ignored at 128 bits, as PG054 says they are not
    meaningful there; ``tuser.is_sof``/``is_eof`` are ignored at 64 bits.

    ``tuser.bar_hit`` is not passed on: the block answers Unsupported Request itself for a
    memory request that hits no BAR, and the board enables only BAR0, so every memory request
    that arrives is a BAR0 hit. ``tuser.err_fwd`` repeats the header's EP bit, which stays in
    the header. ``tuser.ecrc_err`` can only be set when the host enables ECRC checking in an
    AER capability, which the board does not implement.

    Reset: the ``sync`` reset (the block's ``user_reset_out``) drops any partial TLP state;
    the block restarts its stream from a TLP boundary after its own reset.

    Parameters
    ----------
    width : int
        Data width of both streams in bits, 64 or 128 (the block's ``C_DATA_WIDTH``).

    Attributes
    ----------
    axis : In(stream)
        ``m_axis_rx_*`` from the block (:func:`.interface.axis_rx_signature`).
    rx : Out(stream)
        The raw TLP stream (:func:`hdl.pcie.spec.raw_tlp_signature`).
    """

    def __init__(self, *, width: int = 64):
        self.width = check_tlp_width(width)
        super().__init__({
            "axis": In(axis_rx_signature(width)),
            "rx": Out(raw_tlp_signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.width == 64:
            self._elaborate_64(m)
        else:
            self._elaborate_128(m)
        return m

    def _elaborate_64(self, m):
        axis, rx = self.axis, self.rx
        p = axis.payload
        in_pkt = Signal()           # a TLP has started and not yet ended
        beat = Signal(range(3))     # beats of the current TLP seen so far, saturated
        hdr4 = Signal()             # the current TLP has a 4-DW header

        beat_index = Mux(in_pkt, beat, 0)
        hdr4_now = Mux(in_pkt, hdr4, p.tdata[29])
        m.d.comb += [
            rx.valid.eq(axis.valid),
            axis.ready.eq(rx.ready),
            rx.payload.data.eq(swap_payload_dws(p.tdata, width=64, beat_index=beat_index,
                                                hdr4=hdr4_now)),
            rx.payload.keep.eq(Cat(p.tkeep[0], p.tkeep[4])),
            rx.payload.first.eq(~in_pkt),
            rx.payload.last.eq(p.tlast),
        ]
        with m.If(axis.valid & axis.ready):
            m.d.sync += [
                in_pkt.eq(~p.tlast),
                beat.eq(Mux(p.tlast, 0, Mux(beat_index == 2, 2, beat_index + 1))),
                hdr4.eq(hdr4_now),
            ]

    def _elaborate_128(self, m):
        axis, rx = self.axis, self.rx
        p = axis.payload
        sof, eof = p.tuser.is_sof, p.tuser.is_eof

        # A TLP starts at a quad-word boundary (byte 0 or byte 8) and ends in any DW, so the
        # beat is handled as two quad-words, q0 (DW 0, 1) and q1 (DW 2, 3).
        q0, q1 = p.tdata[0:64], p.tdata[64:128]
        sof_lo = sof.present & ~sof.byte[3]
        sof_hi = sof.present & sof.byte[3]
        eof_dw = eof.byte[2:4]
        eof_lo = eof.present & ~eof_dw[1]       # the TLP ends in q0
        eof_hi = eof.present & eof_dw[1]        # the TLP ends in q1

        in_pkt = Signal()                       # a TLP continues into the next beat
        q0_valid = in_pkt | sof_lo
        q1_same = q0_valid & ~eof_lo            # q1 continues the TLP that q0 belongs to
        q1_valid = sof_hi | q1_same
        q0_keep = Cat(Const(1), ~eof_lo | eof_dw[0])
        q1_keep = Cat(Const(1), ~eof_hi | eof_dw[0])

        # One held quad-word: the first half of an output beat whose second half is in the
        # next input beat (a TLP that started in q1). ``flush`` means the held quad-word is
        # the whole last beat of its TLP and goes out on its own.
        pend = Signal(64)
        pend_valid = Signal()
        pend_first = Signal()
        pend_keep = Signal(2)
        flush = Signal()

        out_data = Signal(128)
        out_keep = Signal(4)
        out_first = Signal()
        out_last = Signal()
        with m.If(flush):
            m.d.comb += [out_data.eq(Cat(pend, Const(0, 64))), out_keep.eq(Cat(pend_keep, 0)),
                         out_first.eq(pend_first), out_last.eq(1)]
        with m.Elif(pend_valid):
            m.d.comb += [out_data.eq(Cat(pend, q0)), out_keep.eq(Cat(Const(0b11, 2), q0_keep)),
                         out_first.eq(pend_first), out_last.eq(eof_lo)]
        with m.Else():
            m.d.comb += [out_data.eq(Cat(q0, q1)),
                         out_keep.eq(Cat(q0_keep, Mux(q1_same, q1_keep, 0))),
                         out_first.eq(sof_lo), out_last.eq(eof_lo | q1_same & eof_hi)]

        m.d.comb += [
            rx.valid.eq(flush | axis.valid & q0_valid),
            axis.ready.eq(~flush & (rx.ready | ~q0_valid)),
            # An output beat after the first is all payload (DW 4 and up), so the header
            # length only matters in the first beat, where DW 0 is in lane 0.
            rx.payload.data.eq(swap_payload_dws(out_data, width=128,
                                                beat_index=Mux(out_first, 0, 2),
                                                hdr4=out_data[29])),
            rx.payload.keep.eq(out_keep),
            rx.payload.first.eq(out_first),
            rx.payload.last.eq(out_last),
        ]

        with m.If(flush):
            with m.If(rx.ready):
                m.d.sync += [flush.eq(0), pend_valid.eq(0)]
        with m.Elif(axis.valid & axis.ready):
            m.d.sync += [
                in_pkt.eq(q1_valid & ~eof_hi),
                # q1 is held when it starts a TLP, or when it continues a TLP that was already
                # being re-paired (its q0 went out with the previously held quad-word).
                pend_valid.eq(sof_hi | pend_valid & q1_same),
                pend.eq(q1),
                pend_first.eq(sof_hi),
                pend_keep.eq(q1_keep),
                flush.eq(pend_valid & q1_same & eof_hi),
            ]
