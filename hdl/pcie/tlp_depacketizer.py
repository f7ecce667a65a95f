"""Raw TLP stream -> decoded TLP stream (``docs/tlp-stream.md``)."""
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .spec import TlpHeader, check_tlp_width, raw_tlp_signature, tlp_signature
from .tlp_header import decode_header

__all__ = ["TlpDepacketizer"]


class TlpDepacketizer(wiring.Component):
    """Decodes the header of each TLP and realigns its payload to lane 0.

    Works for 64-bit (2 DW lanes) and 128-bit (4 DW lanes) streams. A TLP is framed by the
    raw stream's ``first``/``last`` marks; its payload is cut to the header's Length field
    (so a trailing TLP digest DW is dropped) and ends early, with ``keep`` telling how many
    DWs came, if the raw TLP was shorter. The header appears on every output beat; a TLP
    without payload (and a data TLP whose payload is missing) becomes one beat with
    ``keep == 0``.

    Throughput: one raw beat per clock. Only a TLP whose payload does not end in its last raw
    beat's lanes costs one extra output beat (the realignment carry).

    Resynchronisation: beats that arrive while the depacketizer waits for a TLP start without
    ``first`` are discarded.

    Parameters
    ----------
    width : int
        Stream width in bits, 64 or 128.

    Attributes
    ----------
    raw : In(raw_tlp_signature(width))
    tlp : Out(tlp_signature(width))
    """

    def __init__(self, *, width: int = 64):
        self.width = check_tlp_width(width)
        super().__init__({
            "raw": In(raw_tlp_signature(width)),
            "tlp": Out(tlp_signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.width // 32
        raw, tlp = self.raw, self.tlp
        lane = [raw.payload.data[32 * i:32 * i + 32] for i in range(lanes)]
        keep = raw.payload.keep

        hdr_reg = [Signal(32, name=f"hdr_dw{i}") for i in range(4)]
        # The header as seen this cycle: while its last raw beat is on the input, the DWs of
        # that beat come straight from the input so the TLP can leave in the same cycle.
        hdr_dw = [Signal(32, name=f"hdr_now{i}") for i in range(4)]
        tail_beat = Signal()        # the input beat holds the header's last DW
        tail_first = 4 - lanes      # first header DW index in the tail beat (0 or 2)
        for i in range(4):
            if i >= tail_first:
                m.d.comb += hdr_dw[i].eq(hdr_reg[i])
                with m.If(tail_beat):
                    m.d.comb += hdr_dw[i].eq(lane[i - tail_first])
            else:
                m.d.comb += hdr_dw[i].eq(hdr_reg[i])
        hdr = Signal(TlpHeader)
        decode_header(m, hdr_dw, hdr)
        m.d.comb += tlp.payload.hdr.eq(hdr)

        fmt_type = hdr_dw[0][24:32]
        four = fmt_type[5]
        with_data = fmt_type[6]
        length = Signal(11)         # payload DWs the header announces (Length 0 means 1024)
        m.d.comb += length.eq(Cat(hdr_dw[0][0:10], hdr_dw[0][0:10] == 0))

        remaining = Signal(11)      # payload DWs still to send on the decoded stream
        carry = Signal(32)          # 3 DW header: the payload DW left over from the last beat
        carry_valid = Signal()
        first_pending = Signal()

        def rem_mask(count):
            return Cat(*(count > i for i in range(lanes)))

        xfer = tlp.valid & tlp.ready

        with m.FSM(name="state"):
            def tail_state():
                """The beat holding the last header DW (for a 3 DW header also payload DW 0)."""
                m.d.comb += tail_beat.eq(1)
                with m.If(raw.valid):
                    for i in range(tail_first, 4):
                        m.d.sync += hdr_reg[i].eq(lane[i - tail_first])
                no_payload = ~with_data | (four & raw.payload.last)
                with m.If(no_payload):
                    # One beat with keep == 0 (also for a data TLP cut before its payload).
                    m.d.comb += [
                        tlp.valid.eq(raw.valid),
                        tlp.payload.first.eq(1),
                        tlp.payload.last.eq(1),
                        raw.ready.eq(tlp.ready),
                    ]
                    with m.If(xfer):
                        with m.If(raw.payload.last):
                            m.next = "HDR0"
                        with m.Else():
                            m.next = "DRAIN"
                with m.Elif(four):
                    m.d.comb += raw.ready.eq(1)
                    with m.If(raw.valid):
                        m.d.sync += [remaining.eq(length), first_pending.eq(1)]
                        m.next = "ALIGNED"
                with m.Else():
                    # 3 DW header: payload DW 0 sits in the last lane of this beat.
                    with m.If(raw.payload.last):
                        m.d.comb += [
                            tlp.valid.eq(raw.valid),
                            tlp.payload.data.eq(lane[lanes - 1]),
                            tlp.payload.keep.eq(keep[lanes - 1]),
                            tlp.payload.first.eq(1),
                            tlp.payload.last.eq(1),
                            raw.ready.eq(tlp.ready),
                        ]
                        with m.If(xfer):
                            m.next = "HDR0"
                    with m.Else():
                        m.d.comb += raw.ready.eq(1)
                        with m.If(raw.valid):
                            m.d.sync += [
                                carry.eq(lane[lanes - 1]),
                                carry_valid.eq(keep[lanes - 1]),
                                remaining.eq(length),
                                first_pending.eq(1),
                            ]
                            m.next = "SHIFTED"

            if lanes == 4:
                with m.State("HDR0"):
                    with m.If(raw.payload.first):
                        tail_state()
                    with m.Else():
                        m.d.comb += raw.ready.eq(1)
            else:
                with m.State("HDR0"):
                    m.d.comb += raw.ready.eq(1)
                    with m.If(raw.valid & raw.payload.first):
                        m.d.sync += [hdr_reg[0].eq(lane[0]), hdr_reg[1].eq(lane[1])]
                        with m.If(~raw.payload.last):
                            m.next = "HDR1"
                with m.State("HDR1"):
                    tail_state()

            with m.State("ALIGNED"):
                done = remaining <= lanes
                m.d.comb += [
                    tlp.valid.eq(raw.valid),
                    tlp.payload.data.eq(raw.payload.data),
                    tlp.payload.keep.eq(keep & rem_mask(remaining)),
                    tlp.payload.first.eq(first_pending),
                    tlp.payload.last.eq(raw.payload.last | done),
                    raw.ready.eq(tlp.ready),
                ]
                with m.If(xfer):
                    m.d.sync += [remaining.eq(remaining - lanes), first_pending.eq(0)]
                    with m.If(raw.payload.last):
                        m.next = "HDR0"
                    with m.Elif(done):
                        m.next = "DRAIN"

            with m.State("SHIFTED"):
                done = remaining <= lanes
                more = keep[lanes - 1]
                m.d.comb += [
                    tlp.valid.eq(raw.valid),
                    tlp.payload.data.eq(Cat(carry, raw.payload.data[:32 * (lanes - 1)])),
                    tlp.payload.keep.eq(Cat(carry_valid, keep[:lanes - 1]) & rem_mask(remaining)),
                    tlp.payload.first.eq(first_pending),
                    tlp.payload.last.eq(done | (raw.payload.last & ~more)),
                    raw.ready.eq(tlp.ready),
                ]
                with m.If(xfer):
                    m.d.sync += [
                        carry.eq(lane[lanes - 1]),
                        carry_valid.eq(more),
                        remaining.eq(remaining - lanes),
                        first_pending.eq(0),
                    ]
                    with m.If(done):
                        with m.If(raw.payload.last):
                            m.next = "HDR0"
                        with m.Else():
                            m.next = "DRAIN"
                    with m.Elif(raw.payload.last):
                        with m.If(more):
                            m.next = "FLUSH"
                        with m.Else():
                            m.next = "HDR0"

            with m.State("FLUSH"):
                m.d.comb += [
                    tlp.valid.eq(1),
                    tlp.payload.data.eq(carry),
                    tlp.payload.keep.eq(Cat(carry_valid, Const(0, lanes - 1))),
                    tlp.payload.first.eq(first_pending),
                    tlp.payload.last.eq(1),
                ]
                with m.If(tlp.ready):
                    m.next = "HDR0"

            with m.State("DRAIN"):
                # Raw DWs beyond the Length field (a digest or a malformed TLP) are dropped.
                m.d.comb += raw.ready.eq(1)
                with m.If(raw.valid & raw.payload.last):
                    m.next = "HDR0"

        return m
