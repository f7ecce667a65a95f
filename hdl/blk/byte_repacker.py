"""Cuts a byte stream into segments that each start at byte lane 0."""
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ByteRepacker", "repacker_in_layout", "repacker_out_layout"]


def repacker_in_layout(width: int) -> data.StructLayout:
    return data.StructLayout({
        "data": unsigned(width),
        "n": range(width // 8 + 1),     # valid bytes, from lane 0
    })


def repacker_out_layout(width: int) -> data.StructLayout:
    return data.StructLayout({
        "data": unsigned(width),
        "n": range(width // 8 + 1),
        "last": unsigned(1),
    })


class ByteRepacker(wiring.Component):
    """Re-cuts a continuous byte stream into segments of given lengths, each byte-packed
    from lane 0.

    The input is one stream of bytes given as beats of ``n`` bytes (1 to ``width / 8``,
    from lane 0; lanes above ``n`` are ignored), with no segment structure. Each entry
    taken from ``seg`` is a segment length ``L`` (at least 1): the next ``L`` bytes of the
    input come out as ``ceil(L / (width / 8))`` beats, every beat full but the last, which
    carries ``n = L mod (width / 8)`` (or a full beat) and ``last``. Lanes above ``n`` of
    the last beat are unspecified. This is the shape the DMA port wants for a write
    command's data and the storage port for a WRITE's data, whatever byte alignment the
    segments have in the input stream.

    One output beat per clock when the input keeps up: a full input beat is taken whenever
    at most ``width / 8`` bytes are held, so a stream of full beats flows at one per clock
    (one bubble after a segment that ends inside a beat). Bytes may enter before their
    segment is known; up to ``2 * width / 8`` bytes are held.

    Reset: empty, no segment.

    Parameters
    ----------
    width : int
        Data width in bits, a multiple of 8.
    len_width : int
        Width of the segment lengths.

    Attributes
    ----------
    i : In(stream.Signature(repacker_in_layout(width)))
    seg : In(stream.Signature(len_width))
    o : Out(stream.Signature(repacker_out_layout(width)))
    busy : Out(1)
        A segment has been taken and not all of its bytes have left on ``o``.
    held : Out(range(2 * width / 8 + 1))
        Bytes held.
    """

    def __init__(self, *, width: int = 64, len_width: int = 32):
        if not isinstance(width, int) or width < 8 or width % 8:
            raise ValueError(f"width must be a positive multiple of 8, not {width!r}")
        if not isinstance(len_width, int) or len_width < 1:
            raise ValueError(f"len_width must be a positive integer, not {len_width!r}")
        self.width = width
        self.len_width = len_width
        nbytes = width // 8
        super().__init__({
            "i": In(stream.Signature(repacker_in_layout(width))),
            "seg": In(stream.Signature(unsigned(len_width))),
            "o": Out(stream.Signature(repacker_out_layout(width))),
            "busy": Out(1),
            "held": Out(range(2 * nbytes + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = self.width // 8

        buf = Signal(2 * self.width)
        level = Signal(range(2 * nbytes + 1))        # bytes held, from lane 0
        active = Signal()
        remaining = Signal(self.len_width)           # bytes of the segment still to send

        out_n = Signal(range(nbytes + 1))
        m.d.comb += out_n.eq(Mux(remaining > nbytes, nbytes, remaining))
        o = self.o
        m.d.comb += [
            o.valid.eq(active & (level >= out_n)),
            o.payload.data.eq(buf[:self.width]),
            o.payload.n.eq(out_n),
            o.payload.last.eq(remaining <= nbytes),
        ]
        take = o.valid & o.ready
        ending = take & o.payload.last

        # A full beat fits when at most nbytes are held (whatever leaves this cycle), so the
        # input's ready does not wait on the output's.
        i = self.i
        m.d.comb += i.ready.eq(level <= nbytes)
        accept = i.valid & i.ready

        shift = Signal(range(nbytes + 1))
        m.d.comb += shift.eq(Mux(take, out_n, 0))
        base = Signal(range(2 * nbytes + 1))         # bytes kept from the buffer
        m.d.comb += base.eq(level - shift)
        kept = Signal(2 * self.width)
        m.d.comb += kept.eq(buf >> (shift * 8))
        incoming = Signal(2 * self.width)
        m.d.comb += incoming.eq(i.payload.data << (base * 8))
        lanes = [Mux(lane < base, kept.word_select(lane, 8), incoming.word_select(lane, 8))
                 for lane in range(2 * nbytes)]
        m.d.sync += [
            buf.eq(Cat(*lanes)),
            level.eq(base + Mux(accept, i.payload.n, 0)),
        ]

        m.d.comb += self.seg.ready.eq(~active | ending)
        with m.If(self.seg.valid & self.seg.ready):
            m.d.sync += [active.eq(1), remaining.eq(self.seg.payload)]
        with m.Elif(ending):
            m.d.sync += active.eq(0)
        with m.Elif(take):
            m.d.sync += remaining.eq(remaining - out_n)

        m.d.comb += [self.busy.eq(active), self.held.eq(level)]
        return m
