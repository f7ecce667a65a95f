"""Byte realignment of write data: byte-packed client beats in, TLP payload beats out."""
from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WriteAligner", "write_align_desc_layout", "payload_beat_layout"]


write_align_desc_layout = data.StructLayout({
    "pad": 2,                   # address mod 4: bytes before the first one in payload DW 0
    "len": range(1 << 17),      # bytes in this TLP (0 only for an empty refused command)
    "cmd_first": 1,             # first TLP of a command: cmd_beats is valid
    "cmd_last": 1,              # last TLP of a command
    "cmd_beats": range(1 << 15),   # client beats of the whole command
})


def payload_beat_layout(width: int) -> data.StructLayout:
    return data.StructLayout({
        "data": unsigned(width),
        "keep": unsigned(width // 32),  # per DW
        "first": 1,
        "last": 1,
    })


class WriteAligner(wiring.Component):
    """Cuts a command's byte-packed data into the DW-aligned payloads of its TLPs.

    For each descriptor the output carries one TLP payload: ``len`` bytes, the first at
    byte ``pad`` of payload DW 0 (payload bytes are in host-memory order, §2.2.4.1 byte
    enables select the ones written), DW-granular ``keep``, ``first``/``last``. The bytes
    come from the client stream in order; a command's client beats are full except its last,
    whose unused bytes are dropped when the command's last TLP ends. Descriptors of length 0
    are taken without output.

    A two-beat byte buffer keeps one payload beat per clock going while the client keeps
    up, whatever the alignment.

    Attributes
    ----------
    desc : In(stream.Signature(write_align_desc_layout))
        One per TLP, taken with the TLP's last beat.
    inp : In(stream.Signature(width))
        Client data beats.
    out : Out(stream.Signature(payload_beat_layout(width)))
        Payload beats.
    """

    def __init__(self, *, width: int = 64):
        if width not in (64, 128):
            raise ValueError(f"width must be 64 or 128 bits, not {width!r}")
        self.width = width
        super().__init__({
            "desc": In(stream.Signature(write_align_desc_layout)),
            "inp": In(stream.Signature(width)),
            "out": Out(stream.Signature(payload_beat_layout(width))),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.width // 8
        desc = self.desc.payload
        buf = Signal(2 * self.width)
        cnt = Signal(range(2 * B + 1))      # bytes held; bytes above cnt are zero
        in_left = Signal(range(1 << 15))
        cmd_loaded = Signal()
        started = Signal()
        out_left = Signal(range(1 << 17))

        left = Mux(started, out_left, desc.len)
        pad = Signal(2)
        m.d.comb += pad.eq(Mux(started, 0, desc.pad))
        take = Signal(range(B + 1))
        m.d.comb += take.eq(Mux(left < B - pad, left, B - pad))
        in_left_cur = Mux(cmd_loaded, in_left, desc.cmd_beats)

        out = self.out.payload
        ndw = (pad + take + 3) >> 2
        m.d.comb += [
            self.out.valid.eq(self.desc.valid & (left != 0) & (cnt >= take)),
            out.data.eq(buf << (pad * 8)),
            out.keep.eq((Const(1, self.width // 32 + 1) << ndw) - 1),
            out.first.eq(~started),
            out.last.eq(take == left),
            self.inp.ready.eq(self.desc.valid & (in_left_cur != 0) & (cnt <= B)),
        ]
        fire_out = self.out.valid & self.out.ready
        fire_in = self.inp.valid & self.inp.ready

        cnt_mid = Signal(range(2 * B + 1))
        m.d.comb += cnt_mid.eq(Mux(fire_out, cnt - take, cnt))
        buf_mid = Mux(fire_out, buf >> (take * 8), buf)
        m.d.sync += [
            buf.eq(Mux(fire_in, buf_mid | (self.inp.payload << (cnt_mid * 8)), buf_mid)),
            cnt.eq(Mux(fire_in, cnt_mid + B, cnt_mid)),
        ]
        with m.If(fire_in):
            m.d.sync += [in_left.eq(in_left_cur - 1), cmd_loaded.eq(1)]

        end_cmd = Signal()
        with m.If(self.desc.valid & ~started & (desc.len == 0)):
            m.d.comb += [self.desc.ready.eq(1), end_cmd.eq(desc.cmd_last)]
        with m.If(fire_out):
            with m.If(out.last):
                m.d.comb += [self.desc.ready.eq(1), end_cmd.eq(desc.cmd_last)]
                m.d.sync += started.eq(0)
            with m.Else():
                m.d.sync += [started.eq(1), out_left.eq(left - take)]
        with m.If(end_cmd):
            # Every byte of the command has gone out: what is left is the padding of its
            # last client beat.
            m.d.sync += [buf.eq(0), cnt.eq(0), cmd_loaded.eq(0)]
        return m
