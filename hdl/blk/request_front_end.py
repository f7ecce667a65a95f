"""The in-order half of the request engine: header reads, decisions, storage commands."""
from amaranth.hdl import Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.blk.layouts import BlkAction, decision_layout, desc_layout, header_layout, \
    read_kind_layout, request_layout
from hdl.blk.request_decoder import RequestDecoder
from hdl.blk.storage_port import StorageOp, storage_cmd_layout
from hdl.pcie.dma_port import MAX_DMA_LEN, dma_cmd_layout
from hdl.virtio.spec import VIRTIO_BLK_REQ_HEADER_BYTES

__all__ = ["RequestFrontEnd"]

HEADER = VIRTIO_BLK_REQ_HEADER_BYTES


class RequestFrontEnd(wiring.Component):
    """Reads each request's header, decides, and starts the storage operation, in order.

    Requests come from the collector in element order. For each one that has a header to
    read (*W* not empty, not too many descriptors, *R* at least 16 bytes) it issues DMA
    reads of ``R[0:16]``, one per readable descriptor the header spans, and queues the
    request; it keeps doing this for later requests while earlier headers are in flight
    (up to one per slot), so header latency overlaps.

    The oldest queued request is decided as soon as its header has arrived (or at once if
    it needs none), by a :class:`~hdl.blk.request_decoder.RequestDecoder`:

    * ``NO_STATUS``, ``STATUS``, ``GET_ID``: the back end is told (``decision``);
    * ``READ``, ``FLUSH``: a storage command tagged with the slot;
    * ``WRITE``: a storage command, the data length to the OUT packer (``pack_seg``), then
      DMA reads of ``R[16:]`` (the OUT data), at most ``max_chunk`` bytes each, from where
      the header ended, descriptor by descriptor.

    Decisions, and so storage commands, follow element order: a FLUSH's storage command
    comes after the WRITE of every OUT accepted before it. Every DMA read command is paired
    with an entry on ``kind`` (taken in the same clock) telling the read router whose bytes
    come back. A command offered on ``dma_cmd`` or ``st_cmd`` stays offered until taken.

    Reset: ``rst`` empties it. Under ``reset`` it starts nothing new; a request whose
    decision was being carried out is finished first (a WRITE's data reads all issued, since
    the storage expects the whole write), then ``quiet`` rises.

    Parameters
    ----------
    slots, max_descriptors : int
        As the engine's (powers of two).
    capacity : int
        Disk size in sectors (for the range check).
    max_chunk : int
        Largest DMA read command for OUT data.

    Attributes
    ----------
    request : In(stream.Signature(request_layout(...)))
    desc_rd : In(ReadPort.Signature(...))
        A read port of the descriptor memory.
    header : In(stream.Signature(header_layout))
        Headers as the read router assembled them, in order.
    dma_cmd : Out(stream.Signature(dma_cmd_layout))
    kind : Out(stream.Signature(read_kind_layout(...)))
    st_cmd : Out(stream.Signature(storage_cmd_layout(...)))
    pack_seg : Out(stream.Signature(32))
    decision : Out(stream.Signature(decision_layout(...)))
        Always taken by the back end.
    reset : In(1)
    quiet : Out(1)
    """

    def __init__(self, *, slots: int, max_descriptors: int, capacity: int,
                 max_chunk: int = 4096):
        if max_chunk < 8 or max_chunk & (max_chunk - 1) or max_chunk > MAX_DMA_LEN:
            raise ValueError(f"max_chunk must be a power of two from 8 to {MAX_DMA_LEN}, "
                             f"not {max_chunk}")
        self.slots = slots
        self.max_descriptors = max_descriptors
        self.capacity = capacity
        self.max_chunk = max_chunk
        self.slot_bits = exact_log2(slots)
        self.desc_bits = exact_log2(max_descriptors)
        self.decoder = RequestDecoder(capacity=capacity)
        super().__init__({
            "request": In(stream.Signature(request_layout(self.slot_bits, max_descriptors))),
            "desc_rd": In(ReadPort.Signature(addr_width=self.slot_bits + self.desc_bits,
                                             shape=desc_layout)),
            "header": In(stream.Signature(header_layout)),
            "dma_cmd": Out(stream.Signature(dma_cmd_layout)),
            "kind": Out(stream.Signature(read_kind_layout(self.slot_bits))),
            "st_cmd": Out(stream.Signature(storage_cmd_layout(self.slot_bits))),
            "pack_seg": Out(stream.Signature(unsigned(32))),
            "decision": Out(stream.Signature(decision_layout(self.slot_bits))),
            "reset": In(1),
            "quiet": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d_max = self.max_descriptors
        m.submodules.decoder = dec = self.decoder

        # Requests whose header reads are issued, waiting for their decision (in order).
        rec_layout = request_layout(self.slot_bits, d_max)
        pend_layout = data.StructLayout({
            "req": rec_layout,
            "data_desc": range(d_max + 1),      # descriptor holding R[16]
            "data_off": range(HEADER + 1),      # its offset there
        })
        m.submodules.pending = pending = fifo.SyncFIFOBuffered(
            width=Shape.cast(pend_layout).width, depth=self.slots)
        pend_in = Signal(pend_layout)
        pend = data.View(pend_layout, pending.r_data)
        m.d.comb += pending.w_data.eq(pend_in)

        def needs_header(req):
            return (req.w_len != 0) & ~req.too_many & (req.r_len >= HEADER)

        cur = Signal(rec_layout)                # the request whose header is being read
        i = Signal(range(d_max + 1))            # descriptor index within the slot
        got = Signal(range(HEADER + 1))         # header bytes requested so far
        off = Signal(32)                        # offset in the current descriptor (OUT data)
        slot = Signal(self.slot_bits)           # the request whose OUT data is being read
        n_r = Signal(range(d_max + 1))
        st_offered = Signal()                   # st_cmd was offered, not taken, last clock

        desc = self.desc_rd.data
        # The port reads only when asked, so a descriptor stays on its data while in use.
        m.d.comb += self.desc_rd.en.eq(0)
        cmd = self.dma_cmd
        kind = self.kind
        # Commands are offered only while the kind queue has room, which only a command of
        # ours can take away: so an offered command stays offered.
        m.d.comb += kind.valid.eq(cmd.valid & cmd.ready)

        head_ready = pending.r_rdy & (~needs_header(pend.req) | self.header.valid)
        m.d.comb += [
            dec.r_len.eq(pend.req.r_len),
            dec.w_len.eq(pend.req.w_len),
            dec.too_many.eq(pend.req.too_many),
            dec.header.eq(self.header.payload.header),
            dec.header_error.eq(self.header.payload.error),
        ]

        def pop():
            m.d.comb += [pending.r_en.eq(1), self.header.ready.eq(needs_header(pend.req))]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.quiet.eq(1)
                with m.If(~self.reset):
                    with m.If(head_ready):
                        m.next = "DECIDE"
                    with m.Elif(self.request.valid & pending.w_rdy):
                        req = self.request.payload
                        m.d.comb += self.request.ready.eq(1)
                        m.d.sync += [cur.eq(req), i.eq(0), got.eq(0)]
                        with m.If(needs_header(req)):
                            m.next = "H_READ"
                        with m.Else():
                            m.d.comb += [pend_in.req.eq(req), pending.w_en.eq(1)]

            with m.State("H_READ"):
                m.d.comb += [self.desc_rd.addr.eq(Cat(i[:self.desc_bits], cur.slot)),
                             self.desc_rd.en.eq(1)]
                m.next = "H_CMD"

            with m.State("H_CMD"):
                want = Signal(range(HEADER + 1))
                m.d.comb += want.eq(HEADER - got)
                take = Signal(range(HEADER + 1))
                m.d.comb += take.eq(Mux(desc.len < want, desc.len, want))
                m.d.comb += [
                    cmd.valid.eq(kind.ready),
                    cmd.payload.addr.eq(desc.addr),
                    cmd.payload.len.eq(take),
                    kind.payload.header.eq(1),
                    kind.payload.last.eq(take == want),
                    kind.payload.slot.eq(cur.slot),
                ]
                with m.If(cmd.valid & cmd.ready):
                    m.d.sync += got.eq(got + take)
                    with m.If(take == want):
                        m.d.comb += [pend_in.req.eq(cur), pend_in.data_desc.eq(i),
                                     pend_in.data_off.eq(take), pending.w_en.eq(1)]
                        m.next = "IDLE"
                    with m.Elif(self.reset):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += i.eq(i + 1)
                        m.next = "H_READ"

            with m.State("DECIDE"):
                st = self.st_cmd
                # A storage command offered before ``reset`` rose stays offered until taken
                # (stream rule); under ``reset`` none is offered anew: the request is
                # dropped here (its pending entry goes with the soft reset at ``idle``).
                m.d.sync += st_offered.eq(st.valid & ~st.ready)
                m.d.comb += [
                    st.payload.tag.eq(pend.req.slot),
                    self.decision.payload.slot.eq(pend.req.slot),
                    self.decision.payload.action.eq(dec.action),
                    self.decision.payload.status.eq(dec.status),
                    self.pack_seg.payload.eq(dec.data_len),
                ]
                with m.If(self.reset & ~st_offered):
                    m.next = "IDLE"
                with m.Else():
                    with m.Switch(dec.action):
                        with m.Case(BlkAction.NO_STATUS, BlkAction.STATUS, BlkAction.GET_ID):
                            m.d.comb += self.decision.valid.eq(1)
                            pop()
                            m.next = "IDLE"
                        with m.Case(BlkAction.READ, BlkAction.FLUSH):
                            is_read = dec.action == BlkAction.READ
                            m.d.comb += [
                                st.valid.eq(1),
                                st.payload.op.eq(Mux(is_read, StorageOp.READ, StorageOp.FLUSH)),
                                st.payload.sector.eq(Mux(is_read, dec.sector, 0)),
                                st.payload.count.eq(Mux(is_read, dec.count, 0)),
                            ]
                            with m.If(st.ready):
                                pop()
                                m.next = "IDLE"
                        with m.Case(BlkAction.WRITE):
                            # The packer learns the length with the command, so its data is
                            # cut for the storage exactly at the write's end.
                            m.d.comb += [
                                st.valid.eq(self.pack_seg.ready),
                                st.payload.op.eq(StorageOp.WRITE),
                                st.payload.sector.eq(dec.sector),
                                st.payload.count.eq(dec.count),
                                self.pack_seg.valid.eq(st.valid & st.ready),
                            ]
                            with m.If(st.valid & st.ready):
                                pop()
                                m.d.sync += [slot.eq(pend.req.slot), i.eq(pend.data_desc),
                                             off.eq(pend.data_off), n_r.eq(pend.req.n_r)]
                                m.next = "D_READ"

            with m.State("D_READ"):
                m.d.comb += [self.desc_rd.addr.eq(Cat(i[:self.desc_bits], slot)),
                             self.desc_rd.en.eq(1)]
                m.next = "D_CMD"

            with m.State("D_CMD"):
                rem = Signal(32)
                m.d.comb += rem.eq(desc.len - off)
                chunk = Signal(range(self.max_chunk + 1))
                m.d.comb += chunk.eq(Mux(rem > self.max_chunk, self.max_chunk, rem))
                m.d.comb += [
                    cmd.valid.eq(kind.ready & (rem != 0)),
                    cmd.payload.addr.eq(desc.addr + off),
                    cmd.payload.len.eq(chunk),
                    kind.payload.header.eq(0),
                    kind.payload.slot.eq(slot),
                ]
                # The header may have used the whole descriptor (rem 0): go on to the next.
                with m.If((rem == 0) | (cmd.valid & cmd.ready)):
                    with m.If(chunk == rem):
                        m.d.sync += [i.eq(i + 1), off.eq(0)]
                        with m.If(i + 1 == n_r):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "D_READ"
                    with m.Else():
                        m.d.sync += off.eq(off + chunk)
        return m
