"""Routes the request engine's DMA read data: header bytes to a header, OUT data onwards."""
from amaranth.hdl import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.blk.byte_repacker import repacker_in_layout
from hdl.blk.layouts import header_layout, read_kind_layout
from hdl.pcie.dma_port import DmaError, read_data_layout
from hdl.virtio.spec import VIRTIO_BLK_REQ_HEADER_BYTES

__all__ = ["ReadRouter"]

HEADER = VIRTIO_BLK_REQ_HEADER_BYTES


class ReadRouter(wiring.Component):
    """Takes the DMA read data of the front end's commands and sends each byte where it
    belongs.

    Every read command has an entry on ``kind`` (queued when the command was taken; the DMA
    channel answers commands in order). Header commands (``kind.header``): their bytes are
    placed one after the other into a 16-byte ``VirtioBlkReqHeader``; after the last beat of
    the header's last command (``kind.last``) the header goes out on ``header`` with
    ``error`` set if any of its commands failed (virtio 1.2 §5.2.6: the header may be spread
    over several descriptors). OUT data commands: every beat goes to ``data`` with its byte
    count (taken from ``keep``); a command that failed raises ``rerr`` with its slot, on its
    last beat (its bytes, zeros, still go on: the storage expects them).

    Every beat is taken: headers go to a FIFO with room for one per slot, and OUT data only
    waits for the packer, which the storage drains.

    Reset: ``rst`` empties the FIFO and any half-assembled header.

    Parameters
    ----------
    width : int
        DMA data width.
    slots : int
        Request slots (the header FIFO's depth).

    Attributes
    ----------
    dma : In(stream.Signature(read_data_layout(width)))
    kind : In(stream.Signature(read_kind_layout(...)))
    header : Out(stream.Signature(header_layout))
    data : Out(stream.Signature(repacker_in_layout(width)))
    rerr : Out(stream.Signature(slot))
        Valid for one clock; always taken.
    """

    def __init__(self, *, width: int = 64, slots: int = 16):
        self.width = width
        self.slots = slots
        self.slot_bits = (slots - 1).bit_length()
        super().__init__({
            "dma": In(stream.Signature(read_data_layout(width))),
            "kind": In(stream.Signature(read_kind_layout(self.slot_bits))),
            "header": Out(stream.Signature(header_layout)),
            "data": Out(stream.Signature(repacker_in_layout(width))),
            "rerr": Out(stream.Signature(unsigned(self.slot_bits))),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = self.width // 8
        m.submodules.headers = headers = fifo.SyncFIFOBuffered(
            width=Shape.cast(header_layout).width, depth=self.slots)
        m.d.comb += [
            self.header.valid.eq(headers.r_rdy),
            self.header.payload.eq(headers.r_data),
            headers.r_en.eq(self.header.ready),
        ]
        header_in = Signal(header_layout)
        m.d.comb += headers.w_data.eq(header_in)

        beat = self.dma.payload
        kind = self.kind.payload
        # keep is contiguous from lane 0: its population count is the byte count.
        n = Signal(range(nbytes + 1))
        m.d.comb += n.eq(sum(beat.keep[k] for k in range(nbytes)))
        masked = Signal(self.width)
        m.d.comb += masked.eq(Cat(*(Mux(beat.keep[k], beat.data.word_select(k, 8), 0)
                                    for k in range(nbytes))))

        assembled = Signal(8 * HEADER)
        offset = Signal(range(HEADER + 1))
        failed = Signal()
        merged = Signal(8 * HEADER)
        m.d.comb += merged.eq(assembled | (masked << (offset * 8)))
        failed_now = failed | (beat.error != DmaError.NONE)

        transfer = self.dma.valid & self.dma.ready
        with m.If(self.kind.valid):
            with m.If(kind.header):
                m.d.comb += self.dma.ready.eq(headers.w_rdy)
                with m.If(transfer):
                    m.d.sync += [assembled.eq(merged), offset.eq(offset + n),
                                 failed.eq(failed_now)]
                    with m.If(beat.last & kind.last):
                        m.d.comb += [header_in.header.eq(merged),
                                     header_in.error.eq(failed_now),
                                     headers.w_en.eq(1)]
                        m.d.sync += [assembled.eq(0), offset.eq(0), failed.eq(0)]
            with m.Else():
                # A beat without bytes (only a refused command has one) is dropped.
                m.d.comb += [
                    self.data.valid.eq(self.dma.valid & (n != 0)),
                    self.data.payload.data.eq(beat.data),
                    self.data.payload.n.eq(n),
                    self.dma.ready.eq(self.data.ready | (n == 0)),
                ]
                with m.If(transfer & beat.last & (beat.error != DmaError.NONE)):
                    m.d.comb += [self.rerr.valid.eq(1), self.rerr.payload.eq(kind.slot)]
            m.d.comb += self.kind.ready.eq(transfer & beat.last)
        return m
