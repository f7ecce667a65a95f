"""Decoded TLP stream -> raw TLP stream (``docs/tlp-stream.md``)."""
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .spec import check_tlp_width, raw_tlp_signature, tlp_signature
from .tlp_header import encode_header

__all__ = ["TlpPacketizer"]


class TlpPacketizer(wiring.Component):
    """Builds the raw header of each TLP and packs the payload right behind it.

    Works for 64-bit (2 DW lanes) and 128-bit (4 DW lanes) streams. The header length and
    whether a payload follows come from the Fmt field of ``hdr``; for a TLP without payload
    the single input beat (``keep == 0``) is consumed with the last header beat. The payload
    is taken as given by ``keep`` (contiguous from lane 0, full on every beat but the last);
    the Length field is sent as it is in ``hdr``.

    Throughput: the header costs its own beats (one or two at 64 bits, at most one at 128 bits,
    none beyond the payload's for a 3 DW header at 128 bits); then one payload beat per clock,
    plus one flush beat when the realigned payload spills into an extra beat.

    Parameters
    ----------
    width : int
        Stream width in bits, 64 or 128.

    Attributes
    ----------
    tlp : In(tlp_signature(width))
    raw : Out(raw_tlp_signature(width))
    """

    def __init__(self, *, width: int = 64):
        self.width = check_tlp_width(width)
        super().__init__({
            "tlp": In(tlp_signature(width)),
            "raw": Out(raw_tlp_signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.width // 32
        tlp, raw = self.tlp, self.raw
        lane = [tlp.payload.data[32 * i:32 * i + 32] for i in range(lanes)]
        keep = tlp.payload.keep

        hdr_dw = [Signal(32, name=f"hdr_dw{i}") for i in range(4)]
        encode_header(m, tlp.payload.hdr, hdr_dw)
        fmt_type = tlp.payload.hdr.fmt_type.as_value()
        four = fmt_type[5]
        with_data = fmt_type[6]

        beat = Signal(range(3))     # header beat index
        # A 3 DW header leaves c = 3 mod lanes header DWs in the beat that starts the payload;
        # from then on each output beat takes c DWs from the previous input beat.
        c = 3 % lanes
        carry = Signal(32 * c)
        carry_keep = Signal(c)

        xfer = raw.valid & raw.ready

        def carry_out(more):
            m.d.sync += [carry.eq(tlp.payload.data[32 * (lanes - c):]),
                         carry_keep.eq(keep[lanes - c:])]
            with m.If(tlp.payload.last):
                with m.If(more):
                    m.next = "FLUSH"
                with m.Else():
                    m.d.sync += beat.eq(0)
                    m.next = "HDR"
            with m.Else():
                m.next = "SHIFTED"

        with m.FSM(name="state"):
            with m.State("HDR"):
                m.d.comb += [raw.valid.eq(tlp.valid), raw.payload.first.eq(beat == 0)]
                for h in (3, 4):
                    beats = (h + lanes - 1) // lanes
                    with m.If(four == (h == 4)):
                        for b in range(beats):
                            dws = hdr_dw[b * lanes:min(h, (b + 1) * lanes)]
                            n = len(dws)
                            with m.If(beat == b):
                                if b < beats - 1:
                                    # A beat of header DWs only; the input waits.
                                    m.d.comb += [raw.payload.data.eq(Cat(*dws)),
                                                 raw.payload.keep.eq((1 << lanes) - 1)]
                                    with m.If(xfer):
                                        m.d.sync += beat.eq(b + 1)
                                    continue
                                with m.If(~with_data):
                                    m.d.comb += [
                                        raw.payload.data.eq(Cat(*dws)),
                                        raw.payload.keep.eq((1 << n) - 1),
                                        raw.payload.last.eq(1),
                                        tlp.ready.eq(raw.ready),
                                    ]
                                    with m.If(xfer):
                                        m.d.sync += beat.eq(0)
                                with m.Else():
                                    if n == lanes:
                                        m.d.comb += [raw.payload.data.eq(Cat(*dws)),
                                                     raw.payload.keep.eq((1 << lanes) - 1)]
                                        with m.If(xfer):
                                            m.d.sync += beat.eq(0)
                                            m.next = "ALIGNED"
                                    else:
                                        # Header tail plus the first payload DWs.
                                        more = keep[lanes - c:].any()
                                        m.d.comb += [
                                            raw.payload.data.eq(Cat(*dws, *lane[:lanes - n])),
                                            raw.payload.keep.eq(
                                                Cat(Const((1 << n) - 1, n), keep[:lanes - n])),
                                            raw.payload.last.eq(tlp.payload.last & ~more),
                                            tlp.ready.eq(raw.ready),
                                        ]
                                        with m.If(xfer):
                                            carry_out(more)

            with m.State("ALIGNED"):
                m.d.comb += [
                    raw.valid.eq(tlp.valid),
                    raw.payload.data.eq(tlp.payload.data),
                    raw.payload.keep.eq(keep),
                    raw.payload.last.eq(tlp.payload.last),
                    tlp.ready.eq(raw.ready),
                ]
                with m.If(xfer & tlp.payload.last):
                    m.next = "HDR"

            with m.State("SHIFTED"):
                more = keep[lanes - c:].any()
                m.d.comb += [
                    raw.valid.eq(tlp.valid),
                    raw.payload.data.eq(Cat(carry, tlp.payload.data[:32 * (lanes - c)])),
                    raw.payload.keep.eq(Cat(carry_keep, keep[:lanes - c])),
                    raw.payload.last.eq(tlp.payload.last & ~more),
                    tlp.ready.eq(raw.ready),
                ]
                with m.If(xfer):
                    carry_out(more)

            with m.State("FLUSH"):
                m.d.comb += [
                    raw.valid.eq(1),
                    raw.payload.data.eq(carry),
                    raw.payload.keep.eq(carry_keep),
                    raw.payload.last.eq(1),
                ]
                with m.If(raw.ready):
                    m.d.sync += beat.eq(0)
                    m.next = "HDR"

        return m
