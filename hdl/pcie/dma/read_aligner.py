"""Byte realignment of read data: buffer-image beats in, byte-packed client beats out."""
from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import DmaError, read_data_layout

__all__ = ["ReadAligner", "read_align_desc_layout", "ring_beat_layout"]


def read_align_desc_layout(width: int) -> data.StructLayout:
    return data.StructLayout({
        "shift": range(width // 8),     # addr mod beat bytes: where the first byte sits
        "len": range(1 << 17),          # bytes of the command
        "bad": 1,                       # refused (BAD_LENGTH): one empty beat
    })


def ring_beat_layout(width: int) -> data.StructLayout:
    return data.StructLayout({
        "data": unsigned(width),
        "error": DmaError,              # this beat belongs to a failed piece
    })


class ReadAligner(wiring.Component):
    """Turns the buffer image of a read command into the client's byte-packed beats.

    A command of ``len`` bytes at address ``A`` arrives as the ``ceil((A % B + len) / B)``
    beats of host memory from ``A`` rounded down to the beat size ``B`` (the first byte is
    at byte ``shift = A % B`` of the first beat). It leaves as ``ceil(len / B)`` beats with
    the first byte in lane 0, ``keep`` marking the valid bytes of the last beat, ``last`` on
    it and, on it, the first error of any of the command's input beats. A refused command
    (``bad``) leaves as one beat with ``keep`` 0 and error BAD_LENGTH.

    With ``shift`` 0 a beat passes through each clock. Otherwise each output beat joins two
    input beats; a command costs one extra clock, to take its first input beat or to emit a
    last output beat that needs no further input.

    Attributes
    ----------
    desc : In(stream.Signature(read_align_desc_layout(width)))
        One per command, taken when the command's last beat leaves.
    inp : In(stream.Signature(ring_beat_layout(width)))
        The buffer image beats of the commands, in order.
    out : Out(stream.Signature(read_data_layout(width)))
        Client read data, as :mod:`hdl.pcie.dma_port` describes it.
    """

    def __init__(self, *, width: int = 64):
        if width not in (64, 128):
            raise ValueError(f"width must be 64 or 128 bits, not {width!r}")
        self.width = width
        super().__init__({
            "desc": In(stream.Signature(read_align_desc_layout(width))),
            "inp": In(stream.Signature(ring_beat_layout(width))),
            "out": Out(stream.Signature(read_data_layout(width))),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.width // 8
        desc = self.desc.payload
        inp = self.inp.payload
        out = self.out.payload

        pv = Signal(self.width)
        pv_valid = Signal()
        started = Signal()
        out_left = Signal(range(1 << 17))
        err_acc = Signal(DmaError)

        left = Mux(started, out_left, desc.len)
        s = desc.shift
        nbytes = Signal(range(B + 1))
        m.d.comb += nbytes.eq(Mux(left > B, B, left))
        keep = Signal(B)
        m.d.comb += keep.eq((Const(1, B + 1) << nbytes) - 1)
        err_in = Mux(err_acc != DmaError.NONE, err_acc, inp.error)
        is_last = left <= B

        def finish():
            m.d.comb += self.desc.ready.eq(1)
            m.d.sync += [started.eq(0), err_acc.eq(DmaError.NONE), pv_valid.eq(0)]

        with m.If(self.desc.valid & desc.bad):
            m.d.comb += [
                self.out.valid.eq(1),
                out.keep.eq(0),
                out.last.eq(1),
                out.error.eq(DmaError.BAD_LENGTH),
            ]
            with m.If(self.out.ready):
                finish()
        with m.Elif(self.desc.valid & pv_valid & (left <= B - s)):
            # The rest of the command is in the held beat: flush it.
            m.d.comb += [
                self.out.valid.eq(1),
                out.data.eq(pv >> (s * 8)),
                out.keep.eq(keep),
                out.last.eq(1),
                out.error.eq(err_acc),
            ]
            with m.If(self.out.ready):
                finish()
        with m.Elif(self.desc.valid & (s != 0) & ~pv_valid):
            # First input beat of a shifted command: hold it.
            m.d.comb += self.inp.ready.eq(1)
            with m.If(self.inp.valid):
                m.d.sync += [pv.eq(inp.data), pv_valid.eq(1), started.eq(1),
                             out_left.eq(left), err_acc.eq(err_in)]
        with m.Elif(self.desc.valid):
            rest = Signal(range(B + 1))
            m.d.comb += rest.eq(B - s)
            joined = Mux(s == 0, inp.data, (pv >> (s * 8)) | (inp.data << (rest * 8)))
            m.d.comb += [
                self.out.valid.eq(self.inp.valid),
                out.data.eq(joined),
                out.keep.eq(keep),
                out.last.eq(is_last),
                out.error.eq(Mux(is_last, err_in, DmaError.NONE)),
                self.inp.ready.eq(self.out.ready),
            ]
            with m.If(self.inp.valid & self.out.ready):
                with m.If(is_last):
                    finish()
                with m.Else():
                    m.d.sync += [pv.eq(inp.data), started.eq(1), out_left.eq(left - B),
                                 err_acc.eq(err_in)]
        return m
