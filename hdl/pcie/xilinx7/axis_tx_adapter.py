from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..spec import check_tlp_width, raw_tlp_signature
from .interface import axis_tx_signature, swap_payload_dws

__all__ = ["AxisTxAdapter"]


class AxisTxAdapter(wiring.Component):
    """A raw TLP stream as the 7-series block's transmit stream (``s_axis_tx_*``).

    Beat for beat and combinational: the raw stream already starts every TLP in lane 0, as
    the block requires on transmit at both widths. Payload DWs are byte-reversed into the
    block's per-DW wire order (:mod:`.interface`), each ``keep`` bit becomes four ``tkeep``
    bits, ``last`` becomes ``tlast``, and ``tuser`` is all zero: no ECRC (the block's
    ``tx_ecrc_gen``), no poisoning by the block (a TLP that must be poisoned carries EP in its
    own header), no streamed mode (``tx_str``; the block then buffers each TLP and tolerates
    ``tvalid`` gaps inside it), never discontinued (``tx_src_dsc``).

    The raw stream's rules (every beat but a TLP's last is full; ``keep`` contiguous from lane
    0) are what the block expects of ``tkeep``; the adapter does not check them.

    Reset: stateless apart from the beat counter used to tell header from payload DWs, which
    the ``sync`` reset clears.

    Parameters
    ----------
    width : int
        Data width of both streams in bits, 64 or 128.

    Attributes
    ----------
    tx : In(stream)
        The raw TLP stream from the device (:func:`hdl.pcie.spec.raw_tlp_signature`).
    axis : Out(stream)
        ``s_axis_tx_*`` to the block (:func:`.interface.axis_tx_signature`).
    """

    def __init__(self, *, width: int = 64):
        self.width = check_tlp_width(width)
        super().__init__({
            "tx": In(raw_tlp_signature(width)),
            "axis": Out(axis_tx_signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        tx, axis = self.tx, self.axis
        p = tx.payload
        beat = Signal(range(3))     # beats of the current TLP already sent, saturated
        hdr4 = Signal()             # the current TLP has a 4-DW header (kept for beat 1)

        beat_index = Mux(p.first, 0, beat)
        hdr4_now = Mux(p.first, p.data[29], hdr4)
        m.d.comb += [
            axis.valid.eq(tx.valid),
            tx.ready.eq(axis.ready),
            axis.payload.tdata.eq(swap_payload_dws(p.data, width=self.width,
                                                   beat_index=beat_index, hdr4=hdr4_now)),
            axis.payload.tkeep.eq(Cat(k.replicate(4) for k in p.keep)),
            axis.payload.tlast.eq(p.last),
            axis.payload.tuser.eq(0),
        ]
        with m.If(tx.valid & tx.ready):
            m.d.sync += [
                beat.eq(Mux(p.last, 0, Mux(beat_index == 2, 2, beat_index + 1))),
                hdr4.eq(hdr4_now),
            ]
        return m
