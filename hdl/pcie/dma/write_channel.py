"""One DMA write channel: splitting at Max_Payload_Size and 4 KiB, MemWr TLPs, done."""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import MAX_DMA_LEN, DmaError, WriteChannelSignature
from hdl.pcie.spec import tlp_signature
from hdl.pcie.dma.layouts import write_desc_layout
from hdl.pcie.dma.request import fill_mem_request
from hdl.pcie.dma.write_aligner import WriteAligner
from hdl.stream_fifo import FULL_RATE_DEPTH, queue_stream

__all__ = ["WriteChannel"]


class WriteChannel(wiring.Component):
    """Serves one client write channel (:class:`~hdl.pcie.dma_port.WriteChannelSignature`).

    A command becomes MemWr TLPs (PCIe Base §2.2.7) that end at multiples of
    Max_Payload_Size (Device Control, §7.5.3.4; a power of two dividing 4096, so no TLP
    crosses a 4 KiB boundary, §2.2.7), each with the byte enables of its first and last DW
    (§2.2.5) and the 3 DW header below 4 GiB. The TLPs leave through a 3-entry queue, so
    that whoever takes them (the request arbiter) starts from registers. ``done`` gets one
    entry per command once its last TLP has left the channel, that queue included, or once
    the command was refused: a client that issues another request after ``done`` (a read
    of what it wrote, a write on another channel that must follow) is ordered behind it. A
    command of length 0 or above ``MAX_DMA_LEN`` is refused with BAD_LENGTH. A TLP that
    would start while Bus Master Enable is clear is not sent, and its command ends with
    NO_BUS_MASTER. Either way the channel takes exactly ``ceil(len / (width // 8))`` data
    beats per command.

    Parameters
    ----------
    width : int
        Data width in bits (64 or 128).

    Attributes
    ----------
    client : In(WriteChannelSignature(width))
        The client's write channel.
    tlp : Out(tlp_signature(width))
        MemWr TLPs.
    mps : In(3)
        Max_Payload_Size encoding (128 << n bytes; reserved values 6 and 7 read as 5).
    bme : In(1)
    requester_id : In(16)
    """

    def __init__(self, *, width: int = 64):
        if width not in (64, 128):
            raise ValueError(f"width must be 64 or 128 bits, not {width!r}")
        self.width = width
        super().__init__({
            "client": In(WriteChannelSignature(width)),
            "tlp": Out(tlp_signature(width)),
            "mps": In(3),
            "bme": In(1),
            "requester_id": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.width // 8
        b_bits = (B - 1).bit_length()
        cmd = self.client.cmd

        m.submodules.descq = descq = fifo.SyncFIFOBuffered(width=write_desc_layout.size,
                                                           depth=4)
        m.submodules.doneq = doneq = fifo.SyncFIFOBuffered(width=DmaError.as_shape().width,
                                                           depth=4)
        m.submodules.aligner = aligner = WriteAligner(width=self.width)
        free = Signal()                 # the done entry on offer may pass (see below)
        m.d.comb += [
            self.client.done.valid.eq(doneq.r_rdy & free),
            self.client.done.payload.error.eq(doneq.r_data),
            doneq.r_en.eq(self.client.done.ready & free),
            aligner.inp.valid.eq(self.client.data.valid),
            aligner.inp.payload.eq(self.client.data.payload.data),
            self.client.data.ready.eq(aligner.inp.ready),
        ]

        # --- splitting -----------------------------------------------------------------
        active = Signal()
        first = Signal()
        cur = Signal(64)
        left = Signal(range(MAX_DMA_LEN + 1))
        cmd_beats = Signal(range(1 << 15))

        new = data.View(write_desc_layout, descq.w_data)
        bad = (cmd.payload.len == 0) | (cmd.payload.len > MAX_DMA_LEN)
        m.d.comb += cmd.ready.eq(~active & descq.w_rdy)
        with m.If(cmd.valid & cmd.ready):
            with m.If(bad):
                m.d.comb += [
                    descq.w_en.eq(1),
                    new.addr.eq(cmd.payload.addr),
                    new.len.eq(cmd.payload.len),
                    new.cmd_first.eq(1),
                    new.cmd_last.eq(1),
                    new.cmd_beats.eq((cmd.payload.len + B - 1) >> b_bits),
                    new.bad.eq(1),
                ]
            with m.Else():
                m.d.sync += [
                    active.eq(1), first.eq(1), cur.eq(cmd.payload.addr),
                    left.eq(cmd.payload.len),
                    cmd_beats.eq((cmd.payload.len + B - 1) >> b_bits),
                ]

        size_log2 = 7 + Mux(self.mps > 5, 5, self.mps)
        room = Signal(range(4097))
        m.d.comb += room.eq((1 << size_log2) - (cur[:12] & ((1 << size_log2) - 1)))
        size = Signal(range(4097))
        m.d.comb += size.eq(Mux(left < room, left, room))
        with m.If(active & descq.w_rdy):
            m.d.comb += [
                descq.w_en.eq(1),
                new.addr.eq(cur),
                new.len.eq(size),
                new.cmd_first.eq(first),
                new.cmd_last.eq(size == left),
                new.cmd_beats.eq(cmd_beats),
            ]
            m.d.sync += [cur.eq(cur + size), left.eq(left - size), first.eq(0)]
            with m.If(size == left):
                m.d.sync += active.eq(0)

        # --- TLPs ------------------------------------------------------------------------
        head = data.View(write_desc_layout, descq.r_data)
        m.d.comb += [
            aligner.desc.valid.eq(descq.r_rdy & doneq.w_rdy),
            aligner.desc.payload.pad.eq(head.addr[:2]),
            aligner.desc.payload.len.eq(head.len),
            aligner.desc.payload.cmd_first.eq(head.cmd_first),
            aligner.desc.payload.cmd_last.eq(head.cmd_last),
            aligner.desc.payload.cmd_beats.eq(head.cmd_beats),
            descq.r_en.eq(aligner.desc.valid & aligner.desc.ready),
        ]

        beat = aligner.out.payload
        drop_cur = Signal()
        dropping = Mux(beat.first, head.bad | ~self.bme, drop_cur)
        made = tlp_signature(self.width).create(path=("made",))
        m.submodules.tlpq = queue_stream(m, made, self.tlp, depth=FULL_RATE_DEPTH)
        tlp = made.payload
        m.d.comb += [
            made.valid.eq(aligner.out.valid & ~dropping),
            aligner.out.ready.eq(dropping | made.ready),
            tlp.data.eq(beat.data),
            tlp.keep.eq(beat.keep),
            tlp.first.eq(beat.first),
            tlp.last.eq(beat.last),
        ]
        fill_mem_request(m, tlp.hdr, write=True, addr=head.addr, length=head.len,
                         requester_id=self.requester_id, tag=0)

        taken = aligner.out.valid & aligner.out.ready
        with m.If(taken & beat.first):
            m.d.sync += drop_cur.eq(dropping)

        # --- done waits for the queue ---------------------------------------------------------
        # A done entry may pass once every TLP that was in the queue when it showed up has
        # left (its command's TLPs entered before it did; later ones do not hold it up).
        ends_in = made.valid & made.ready & made.payload.last
        ends_out = self.tlp.valid & self.tlp.ready & self.tlp.payload.last
        queued = Signal(range(4))       # TLP ends in the queue
        with m.If(ends_in & ~ends_out):
            m.d.sync += queued.eq(queued + 1)
        with m.Elif(ends_out & ~ends_in):
            m.d.sync += queued.eq(queued - 1)
        armed = Signal()                # ``wait`` counts for the entry on offer
        wait = Signal(range(4))         # TLP ends still to leave before it may pass
        m.d.comb += free.eq(armed & (wait == 0))
        with m.If(~armed):
            with m.If(doneq.r_rdy):
                m.d.sync += [armed.eq(1), wait.eq(queued - ends_out)]
        with m.Elif(~free):
            with m.If(ends_out):
                m.d.sync += wait.eq(wait - 1)
        with m.Elif(self.client.done.ready):
            m.d.sync += armed.eq(0)

        # --- outcome per command ---------------------------------------------------------
        err_acc = Signal(DmaError)
        err_now = Signal(DmaError)
        with m.If(err_acc != DmaError.NONE):
            m.d.comb += err_now.eq(err_acc)
        with m.Elif(head.bad):
            m.d.comb += err_now.eq(DmaError.BAD_LENGTH)
        with m.Elif(taken & beat.first & dropping):
            m.d.comb += err_now.eq(DmaError.NO_BUS_MASTER)
        with m.If(descq.r_en):
            with m.If(head.cmd_last):
                m.d.comb += [doneq.w_en.eq(1), doneq.w_data.eq(err_now)]
                m.d.sync += err_acc.eq(DmaError.NONE)
            with m.Else():
                m.d.sync += err_acc.eq(err_now)
        with m.Elif(taken):
            m.d.sync += err_acc.eq(err_now)
        return m
