"""One DMA read channel: splitting, completion buffer, in-order delivery."""
from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import MAX_DMA_LEN, DmaError, ReadChannelSignature
from hdl.pcie.dma.layouts import read_sub_layout, ring_write_layout, slot_event_layout
from hdl.pcie.dma.read_aligner import ReadAligner, read_align_desc_layout

__all__ = ["ReadChannel"]


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class ReadChannel(wiring.Component):
    """Serves one client read channel (:class:`~hdl.pcie.dma_port.ReadChannelSignature`).

    A command is cut into pieces that end at multiples of the read size, the smaller of
    Max_Read_Request_Size (Device Control, PCIe Base §7.5.3.4) and ``max_read``; both are
    powers of two dividing 4096, so no piece crosses a 4 KiB boundary (§2.2.7). Before a
    piece goes to the requester it is given a reorder slot and room in the channel's
    completion buffer for every beat its completions can fill, so completion data always has
    a place. The buffer holds the commands' host memory image beat by beat, in command
    order; a piece's completions land in its reserved beats in whatever order they arrive.
    Pieces are delivered strictly in order: the oldest piece is read out once it has ended
    (all data in, or failed), its beats are realigned to the client's byte-packed format and
    its buffer room is given back as it is read.

    Parameters
    ----------
    width : int
        Data width in bits (64 or 128).
    index : int
        This channel's number on the engine's completion buses.
    channels : int
        Read channels of the engine (width of the channel field on those buses).
    ring_beats : int
        Completion buffer beats, a power of two holding at least 4096 bytes.
    slots : int
        Pieces that may be outstanding at once, a power of two.
    max_read : int
        Largest piece in bytes, a power of two 128..4096.

    Attributes
    ----------
    client : In(ReadChannelSignature(width))
        The client's read channel.
    sub : Out(stream.Signature(read_sub_layout(...)))
        Pieces for the requester.
    ring_wr : In(ring_write_layout(...))
        Completion data; taken when its ``chan`` is ``index``.
    slot_done : In(slot_event_layout(...))
        Piece outcomes; taken when ``valid`` and ``chan`` is ``index``.
    mrrs : In(3)
        Max_Read_Request_Size encoding (128 << n bytes; reserved values 6 and 7 read as 5).
    """

    def __init__(self, *, width: int, index: int, channels: int, ring_beats: int, slots: int,
                 max_read: int):
        B = width // 8
        if ring_beats & (ring_beats - 1) or ring_beats * B < 4096:
            raise ValueError(f"ring_beats must be a power of two of at least 4096 bytes, "
                             f"not {ring_beats} beats of {B} bytes")
        if slots < 2 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two of at least 2, not {slots}")
        if max_read not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_read must be a power of two 128..4096, not {max_read}")
        self.width = width
        self.index = index
        self.channels = channels
        self.ring_beats = ring_beats
        self.slots = slots
        self.max_read = max_read
        self.chan_bits = _bits(channels)
        self.slot_bits = _bits(slots)
        self.ring_bits = _bits(ring_beats)
        self.lanes = width // 32
        super().__init__({
            "client": In(ReadChannelSignature(width)),
            "sub": Out(stream.Signature(read_sub_layout(self.ring_bits, self.slot_bits))),
            "ring_wr": In(ring_write_layout(self.chan_bits, self.lanes, self.ring_bits)),
            "slot_done": In(slot_event_layout(self.chan_bits, self.slot_bits)),
            "mrrs": In(3),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.width // 8
        b_bits = (B - 1).bit_length()
        cmd = self.client.cmd

        m.submodules.aligner = aligner = ReadAligner(width=self.width)
        wiring.connect(m, aligner.out, wiring.flipped(self.client.data))

        desc_layout = read_align_desc_layout(self.width)
        m.submodules.cmdq = cmdq = fifo.SyncFIFOBuffered(width=desc_layout.size,
                                                         depth=self.slots)
        slot_layout = data.StructLayout({"beats": range(4096 // B + 2)})
        m.submodules.slotq = slotq = fifo.SyncFIFOBuffered(width=slot_layout.size,
                                                           depth=self.slots)
        m.d.comb += [
            aligner.desc.valid.eq(cmdq.r_rdy),
            aligner.desc.payload.eq(cmdq.r_data),
            cmdq.r_en.eq(aligner.desc.ready),
        ]

        # --- splitting and reservation ---------------------------------------------------
        # A piece is planned (size, beats) in the cycle before it is offered, from registers
        # only: the size arithmetic and the requester's grant are in different cycles, and
        # the room left is a counter, not a difference. A channel offers at most one piece
        # every other cycle, far more than the link carries.
        active = Signal()
        cur = Signal(64)
        left = Signal(range(MAX_DMA_LEN + 1))
        reserved = Signal(self.ring_bits + 1)
        free = Signal(self.ring_bits + 1, init=self.ring_beats)
        release = Signal()              # a beat leaves the buffer this cycle
        slot_w = Signal(self.slot_bits)

        bad = (cmd.payload.len == 0) | (cmd.payload.len > MAX_DMA_LEN)
        cmd_in = data.View(desc_layout, cmdq.w_data)
        m.d.comb += [
            cmd.ready.eq(~active & cmdq.w_rdy),
            cmdq.w_en.eq(cmd.valid & cmd.ready),
            cmd_in.shift.eq(cmd.payload.addr[:b_bits]),
            cmd_in.len.eq(cmd.payload.len),
            cmd_in.bad.eq(bad),
        ]
        with m.If(cmd.valid & cmd.ready & ~bad):
            m.d.sync += [active.eq(1), cur.eq(cmd.payload.addr), left.eq(cmd.payload.len)]

        # The read size, registered: Device Control changes by configuration writes only.
        max_log2 = self.max_read.bit_length() - 1
        mrrs_log2 = 7 + Mux(self.mrrs > 5, 5, self.mrrs)
        size_log2 = Signal(range(13), init=7)
        m.d.sync += size_log2.eq(Mux(mrrs_log2 > max_log2, max_log2, mrrs_log2))
        room = Signal(range(4097))
        m.d.comb += room.eq((1 << size_log2) - (cur[:12] & ((1 << size_log2) - 1)))
        size = Signal(range(4097))
        m.d.comb += size.eq(Mux(left < room, left, room))
        beats_layout = range(4096 // B + 2)
        beats = Signal(beats_layout)
        m.d.comb += beats.eq((cur[:b_bits] + size + B - 1) >> b_bits)

        planned = Signal()
        p_size = Signal(range(4097))
        p_beats = Signal(beats_layout)
        p_last = Signal()               # the piece ends the command
        with m.If(active & ~planned):
            m.d.sync += [planned.eq(1), p_size.eq(size), p_beats.eq(beats),
                         p_last.eq(size == left)]

        sub = self.sub.payload
        slot_in = data.View(slot_layout, slotq.w_data)
        taken = Signal()
        m.d.comb += [
            self.sub.valid.eq(planned & slotq.w_rdy & (p_beats <= free)),
            sub.addr.eq(cur),
            sub.len.eq(p_size),
            sub.slot.eq(slot_w),
            sub.ring_base.eq(reserved[:self.ring_bits]),
            taken.eq(self.sub.valid & self.sub.ready),
            slotq.w_en.eq(taken),
            slot_in.beats.eq(p_beats),
        ]
        m.d.sync += free.eq(free - Mux(taken, p_beats, 0) + release)
        with m.If(taken):
            m.d.sync += [
                reserved.eq(reserved + p_beats),
                cur.eq(cur + p_size),
                left.eq(left - p_size),
                slot_w.eq(slot_w + 1),
                planned.eq(0),
            ]
            with m.If(p_last):
                m.d.sync += active.eq(0)

        # --- completion buffer -------------------------------------------------------------
        rp = Signal(self.ring_bits)
        read_ports = []
        for t in range(self.lanes):
            mem = Memory(shape=32, depth=self.ring_beats, init=[])
            m.submodules[f"ring{t}"] = mem
            wp = mem.write_port()
            lane = self.ring_wr.lane[t]
            m.d.comb += [
                wp.addr.eq(lane.addr),
                wp.data.eq(lane.data),
                wp.en.eq(lane.en & (self.ring_wr.chan == self.index)),
            ]
            rport = mem.read_port()
            m.d.comb += rport.addr.eq(rp)
            read_ports.append(rport)

        # --- piece outcomes ------------------------------------------------------------------
        done = Signal(self.slots)
        errors = Array(Signal(DmaError, name=f"err{i}") for i in range(self.slots))
        ev = self.slot_done
        mine = ev.valid & (ev.chan == self.index)
        for i in range(self.slots):
            # a decoder per slot: an Array write would be a case of cases
            with m.If(mine & (ev.slot == i)):
                m.d.sync += errors[i].eq(ev.error)
        with m.If(mine):
            m.d.sync += done.bit_select(ev.slot, 1).eq(1)

        # --- in-order delivery: the read port's output is a one-beat pipeline register ---
        slot_r = Signal(self.slot_bits)
        in_slot = Signal(range(4096 // B + 2))
        head = data.View(slot_layout, slotq.r_data)
        q_valid = Signal()
        q_err = Signal(DmaError)
        advance = ~q_valid | aligner.inp.ready
        can_read = slotq.r_rdy & done.bit_select(slot_r, 1)
        for rport in read_ports:
            m.d.comb += rport.en.eq(advance)
        with m.If(advance):
            m.d.sync += q_valid.eq(can_read)
            with m.If(can_read):
                m.d.sync += [
                    q_err.eq(errors[slot_r]),
                    rp.eq(rp + 1),
                    in_slot.eq(in_slot + 1),
                ]
                m.d.comb += release.eq(1)
                with m.If(in_slot == head.beats - 1):
                    m.d.comb += slotq.r_en.eq(1)
                    m.d.sync += [done.bit_select(slot_r, 1).eq(0), slot_r.eq(slot_r + 1),
                                 in_slot.eq(0)]
        ring_data = Signal(self.width)
        for t, rport in enumerate(read_ports):
            m.d.comb += ring_data[32 * t:32 * t + 32].eq(rport.data)
        m.d.comb += [
            aligner.inp.valid.eq(q_valid),
            # A failed piece reads as zero: the contract promises no stale buffer contents.
            aligner.inp.payload.data.eq(Mux(q_err == DmaError.NONE, ring_data, 0)),
            aligner.inp.payload.error.eq(q_err),
        ]
        return m
