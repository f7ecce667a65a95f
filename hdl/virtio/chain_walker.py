"""Follows descriptor chains (direct and indirect) and checks them against the rules."""
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.pcie.dma_port import ReadChannelSignature, read_data_layout
from hdl.virtio.avail_fetcher import block_layout, head_layout
from hdl.virtio.spec import VIRTQ_DESC_BYTES, VirtqDesc, VirtqDescFlags
from hdl.virtio.virtqueue_port import QUEUE_BITS, VirtqConfig, VirtqError, VirtqErrorKind, \
    VirtqFeatures

__all__ = ["ChainWalker", "walk_beat_layout", "FULL_LEN_BITS"]

FULL_LEN_BITS = 33
"""Width of an element's total device-writable length, saturated at 2**32: a length that
does not fit 32 bits can never equal a 32-bit written length."""

walk_beat_layout = data.StructLayout({
    "desc": 1,              # the beat carries a descriptor (addr, len, write)
    "addr": 64,
    "len": 32,
    "write": 1,
    "end": 1,               # the element ends with this beat
    "abort": 1,             # ... and is dropped (a bad chain), not committed
    "queue": unsigned(QUEUE_BITS),
    "head": 16,
    "writable_len": FULL_LEN_BITS,   # with end and not abort: the element's writable bytes
})
"""What the walker hands the dispatcher: an element's descriptors, then its verdict."""

_NEXT = int(VirtqDescFlags.NEXT)
_WRITE = int(VirtqDescFlags.WRITE)
_INDIRECT = int(VirtqDescFlags.INDIRECT)


class _State(enum.Enum, shape=4):
    HEAD = 0            # take the next head (and its group's block)
    PROC = 1            # a descriptor is at hand (from the block buffer or ``dreg``)
    FETCH = 2           # find descriptor ``e`` somewhere else
    SINGLE_CMD = 3      # read one descriptor on ring_rd
    SINGLE_DATA = 4
    TABLE_CMD = 5       # read an indirect table on ring_rd
    TABLE_READ = 6      # take table entries up to entry ``e``
    TABLE_DRAIN = 7     # take the rest of the table read, then go to ``resume``
    END = 8             # the chain ended; give the verdict once the table read is done
    ERROR = 9           # the chain is bad; drop the element once the table read is done


class ChainWalker(wiring.Component):
    """Turns available heads into checked elements (virtio 1.2 §2.7.5, §2.7.5.3, §2.7.4.2).

    Heads come in *groups* (see :class:`~hdl.virtio.avail_fetcher.AvailFetcher`), each with
    a block of consecutive descriptors read on the prefetch channel. Block data is stored in
    a buffer of ``2 * max_block`` descriptors as it arrives; a group is walked only once its
    whole block is in (so its error status is known, as the DMA port requires), while the
    next blocks keep arriving. For each head the walker follows ``next``:

    * a descriptor inside the group's block is taken from the buffer (one per clock, so a
      chain laid out in ring order, as IN_ORDER drivers do, costs no extra read);
    * any other descriptor is read on its own (16 bytes) on ``ring_rd``;
    * an indirect descriptor (§2.7.5.3) makes it read the table on ``ring_rd`` in one
      command (at most ``max_chain_len`` entries) and walk it from entry 0; entries reached
      out of order are skipped to, or read on their own.

    It checks every rule of ``docs/robustness.md``: head and ``next`` in range, chain not
    longer than its table (a loop) nor than ``max_chain_len``, indirect only when negotiated,
    never with NEXT, never nested, length a non-zero multiple of 16, no device-readable
    descriptor after a device-writable one. A bad chain stops its queue (``stop``, ``error``)
    and is dropped; later heads of a stopped queue are skipped.

    Descriptors go out on ``out`` as soon as they are read; the element's verdict (commit
    with its total writable length, or abort) follows on the last beat, after every read
    that contributed to it has completed without a DMA error.

    Reset: the block buffer and the element in progress are forgotten (the engine resets
    the walker only once no read of its is outstanding).

    Parameters
    ----------
    num_queues, max_queue_size, width, max_batch, max_block, max_chain_len : int
        As :class:`~hdl.virtio.virtqueue_engine.VirtqueueEngine`.

    Attributes
    ----------
    config, features, stopped, quiesce : In
        As the fetcher's.
    heads, blocks : In(stream.Signature(...))
        From the fetcher.
    desc_data : In(stream.Signature(read_data_layout(width)))
        The data of the fetcher's block reads, in order.
    block_free : Out(1)
        Pulse: a group is finished (its reservation in the fetcher is free).
    ring_rd : Out(ReadChannelSignature(width))
        Single descriptor and indirect table reads.
    out : Out(stream.Signature(walk_beat_layout))
    stop, error : Out
        Queues stopped on a bad chain or a failed read; the kind of one of them.
    events : Out(StructLayout)
        Pulses ``rd_desc_chain`` and ``rd_indirect`` (one per read issued).
    quiet : Out(1)
        No read offered on ``ring_rd``.
    """

    def __init__(self, *, num_queues: int, max_queue_size: int, width: int = 64,
                 max_batch: int = 32, max_block: int = 64, max_chain_len: int = 256):
        self.num_queues = num_queues
        self.max_queue_size = max_queue_size
        self.width = width
        self.max_batch = max_batch
        self.max_block = max_block
        self.max_chain_len = max_chain_len
        self.fifo_depth = 4 * max_batch
        super().__init__({
            "config": In(data.ArrayLayout(VirtqConfig, num_queues)),
            "features": In(VirtqFeatures),
            "stopped": In(num_queues),
            "quiesce": In(1),
            "heads": In(stream.Signature(head_layout)),
            "blocks": In(stream.Signature(block_layout(max_block, max_batch))),
            "desc_data": In(stream.Signature(read_data_layout(width))),
            "block_free": Out(1),
            "ring_rd": Out(ReadChannelSignature(width)),
            "out": Out(stream.Signature(walk_beat_layout)),
            "stop": Out(num_queues),
            "error": Out(stream.Signature(VirtqError, always_ready=True)),
            "events": Out(data.StructLayout({"rd_desc_chain": 1, "rd_indirect": 1})),
            "quiet": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nq = self.num_queues
        width = self.width
        bpd = 128 // width              # data beats per descriptor
        cap = 2 * self.max_block        # block buffer, in descriptors
        cap_bits = exact_log2(cap)
        max_chain = self.max_chain_len

        # --- block buffer: block data stored as it arrives ----------------------------------
        m.submodules.buf = buf = Memory(shape=VirtqDesc, depth=cap, init=[])
        buf_w = buf.write_port()
        buf_r = buf.read_port()
        # The read port holds its data unless a new read is asked for (PROC may stall).
        m.d.comb += buf_r.en.eq(0)
        m.submodules.bdone = bdone = fifo.SyncFIFOBuffered(width=1, depth=self.fifo_depth)

        wp = Signal(cap_bits + 1)       # next descriptor slot to write
        gp = Signal(cap_bits + 1)       # first slot of the current group's block
        room = Signal(cap_bits + 1)
        m.d.comb += room.eq(cap - (wp - gp))
        din = self.desc_data
        if bpd == 1:
            m.d.comb += [
                din.ready.eq((room != 0) & bdone.w_rdy),
                buf_w.addr.eq(wp[:cap_bits]),
                buf_w.data.eq(din.payload.data),
                buf_w.en.eq(din.valid & din.ready),
            ]
            with m.If(buf_w.en):
                m.d.sync += wp.eq(wp + 1)
        else:
            lo = Signal(64)
            have_lo = Signal()
            m.d.comb += [
                din.ready.eq(~have_lo | ((room != 0) & bdone.w_rdy)),
                buf_w.addr.eq(wp[:cap_bits]),
                buf_w.data.eq(Cat(lo, din.payload.data)),
                buf_w.en.eq(din.valid & din.ready & have_lo),
            ]
            with m.If(din.valid & din.ready):
                m.d.sync += [lo.eq(din.payload.data), have_lo.eq(~have_lo)]
            with m.If(buf_w.en):
                m.d.sync += wp.eq(wp + 1)
        m.d.comb += [
            bdone.w_en.eq(din.valid & din.ready & din.payload.last),
            bdone.w_data.eq(din.payload.error.as_value() != 0),
        ]

        # --- group state --------------------------------------------------------------------
        g_base = Signal(16)
        g_count = Signal(range(self.max_block + 1))
        g_end = Signal(cap_bits + 1)    # gp + g_count: where the next group's block starts
        g_off = Signal(cap_bits)        # (gp - g_base) mod cap: descriptor x is in slot x + g_off
        g_left = Signal(range(self.max_batch + 1))      # heads of the group not yet taken
        g_err = Signal()                # the block read failed
        g_active = Signal()

        # --- element state ------------------------------------------------------------------
        state = Signal(_State)
        resume = Signal(_State)         # where TABLE_DRAIN goes when the table read is done
        cur_q = Signal(QUEUE_BITS)
        cur_head = Signal(16)
        e = Signal(16)                  # the descriptor (or table entry) wanted next
        in_table = Signal()
        visited = Signal(range(self.max_queue_size + 1))    # direct descriptors read
        t_visited = Signal(28)          # table entries read
        ndesc = Signal(range(max_chain + 1))                # descriptors handed out
        wsum = Signal(FULL_LEN_BITS)
        seen_write = Signal()
        raw = Signal()                  # a device-readable descriptor after a writable one
        emitted = Signal()              # beats of this element were handed out
        src_mem = Signal()              # PROC's descriptor is buf_r.data (else dreg)
        dreg = Signal(VirtqDesc)
        t_addr = Signal(64)
        t_entries = Signal(28)
        t_left = Signal(range(max_chain + 1))   # table entries still to arrive
        t_pos = Signal(28)              # index of the next table entry to arrive
        t_err = Signal()
        err_kind = Signal(VirtqErrorKind)
        lo_ring = Signal(64)            # first half of a descriptor on a 64-bit ring_rd
        half = Signal()

        cfg = self.config[cur_q]
        size = cfg.size

        # --- helpers ------------------------------------------------------------------------
        def hits(index, base, count):
            return (count != 0) & (index >= base) & ((index - base) < count)

        def buf_addr(index, offset):
            return (index[:cap_bits] + offset)[:cap_bits]

        def start_element(head_rec):
            m.d.sync += [
                cur_q.eq(head_rec.queue),
                cur_head.eq(head_rec.head),
                e.eq(head_rec.head),
                in_table.eq(0),
                visited.eq(0),
                t_visited.eq(0),
                ndesc.eq(0),
                wsum.eq(0),
                seen_write.eq(0),
                raw.eq(0),
                emitted.eq(0),
                t_left.eq(0),
                t_err.eq(0),
            ]

        def fail(kind):
            m.d.sync += [err_kind.eq(kind), state.eq(_State.ERROR)]

        # --- HEAD: take the next head, with its group's block when a group starts ----------
        head = self.heads.payload
        blk = self.blocks.payload
        new_group = Signal()            # this cycle starts the next group
        m.d.comb += new_group.eq((g_left == 0) & self.blocks.valid
                                 & ((blk.count == 0) | bdone.r_rdy))
        eff_base = Mux(new_group, blk.base, g_base)
        eff_count = Mux(new_group, blk.count, g_count)
        eff_gp = Signal(cap_bits + 1)
        m.d.comb += eff_gp.eq(Mux(g_active & (g_left == 0), g_end, gp))
        eff_off = Mux(new_group, (eff_gp - blk.base)[:cap_bits], g_off)
        eff_err = Mux(new_group, (blk.count != 0) & bdone.r_data[0], g_err)

        head_there = ((g_left != 0) | new_group) & self.heads.valid
        h_stopped = self.stopped.bit_select(head.queue, 1)
        h_bad = head.head >= self.config[head.queue].size
        h_hit = hits(head.head, eff_base, eff_count)
        # The head on offer starts in its group's block: its first descriptor can be read
        # from the buffer at once.
        fast_ok = head_there & ~h_stopped & ~eff_err & ~h_bad & h_hit

        free_group = Signal()

        def release_group():
            """The group is done: its block leaves the buffer."""
            m.d.comb += free_group.eq(1)
            m.d.sync += [gp.eq(eff_gp), g_active.eq(0)]

        def take_head():
            """Take the head on offer, and its group's block when a new group starts."""
            with m.If((g_left == 0) & g_active):
                release_group()
            with m.If(new_group):
                m.d.comb += [
                    self.blocks.ready.eq(1),
                    bdone.r_en.eq(blk.count != 0),
                ]
                m.d.sync += [
                    g_active.eq(1),
                    g_base.eq(blk.base),
                    g_count.eq(blk.count),
                    g_end.eq(eff_gp + blk.count),
                    g_off.eq(eff_off),
                    g_err.eq(eff_err),
                ]
            m.d.comb += self.heads.ready.eq(1)
            m.d.sync += g_left.eq(Mux(new_group, blk.heads, g_left) - 1)

        def start_from_buffer():
            start_element(head)
            m.d.comb += [
                buf_r.addr.eq(buf_addr(head.head, eff_off)),
                buf_r.en.eq(1),
            ]
            m.d.sync += [state.eq(_State.PROC), src_mem.eq(1)]

        with m.If(state == _State.HEAD):
            with m.If(head_there):
                take_head()
                with m.If(h_stopped):
                    pass                            # the queue stopped: skip its heads
                with m.Elif(eff_err):
                    m.d.sync += [cur_q.eq(head.queue), err_kind.eq(
                        VirtqErrorKind.DMA_READ_ERROR), state.eq(_State.ERROR),
                        emitted.eq(0), t_left.eq(0)]
                with m.Elif(h_bad):
                    m.d.sync += [cur_q.eq(head.queue), err_kind.eq(
                        VirtqErrorKind.HEAD_OUT_OF_RANGE), state.eq(_State.ERROR),
                        emitted.eq(0), t_left.eq(0)]
                with m.Elif(h_hit):
                    start_from_buffer()
                with m.Else():
                    start_element(head)
                    m.d.sync += state.eq(_State.FETCH)
            with m.Elif((g_left == 0) & g_active):
                release_group()

        # --- PROC: one descriptor ----------------------------------------------------------
        d = Signal(VirtqDesc)
        m.d.comb += d.eq(Mux(src_mem, buf_r.data.as_value(), dreg.as_value()))
        is_write = (d.flags & _WRITE) != 0
        has_next = (d.flags & _NEXT) != 0
        is_indirect = (d.flags & _INDIRECT) != 0
        wsum_next = Signal(FULL_LEN_BITS)
        added = Signal(FULL_LEN_BITS + 1)
        m.d.comb += [
            added.eq(wsum + Mux(is_write, d.len, 0)),
            wsum_next.eq(Mux(added >= (1 << 32), 1 << 32, added)),
        ]
        raw_next = raw | (seen_write & ~is_write)
        visited_next = visited + ~in_table
        ndesc_next = ndesc + 1
        next_limit = Mux(in_table, t_entries, size)
        t_count = Signal(range(max_chain + 1))
        m.d.comb += t_count.eq(Mux(d.len[4:] > max_chain, max_chain, d.len[4:]))

        out = self.out.payload
        m.d.comb += [
            out.addr.eq(d.addr),
            out.len.eq(d.len),
            out.write.eq(is_write),
            out.queue.eq(cur_q),
            out.head.eq(cur_head),
            out.writable_len.eq(wsum_next),
        ]
        fetch_rd = self.ring_rd.cmd

        with m.If(state == _State.PROC):
            with m.If(is_indirect):
                with m.If(in_table):
                    fail(VirtqErrorKind.NESTED_INDIRECT)
                with m.Elif(~self.features.indirect_desc):
                    fail(VirtqErrorKind.INDIRECT_NOT_NEGOTIATED)
                with m.Elif(has_next):
                    fail(VirtqErrorKind.INDIRECT_WITH_NEXT)
                with m.Elif((d.len == 0) | (d.len[:4] != 0)):
                    fail(VirtqErrorKind.BAD_INDIRECT_LEN)
                with m.Elif(~self.quiesce):
                    # Read the table (§2.7.5.3): up to max_chain_len entries in one command.
                    m.d.sync += [
                        visited.eq(visited_next),
                        in_table.eq(1),
                        t_addr.eq(d.addr),
                        t_entries.eq(d.len[4:]),
                        t_visited.eq(0),
                        t_left.eq(t_count),
                        t_pos.eq(0),
                        t_err.eq(0),
                        e.eq(0),
                        fetch_rd.payload.addr.eq(d.addr),
                        fetch_rd.payload.len.eq(t_count * VIRTQ_DESC_BYTES),
                        state.eq(_State.TABLE_CMD),
                    ]
                    m.d.comb += self.events.rd_indirect.eq(1)
            with m.Elif(has_next & (d.next >= next_limit)):
                fail(VirtqErrorKind.NEXT_OUT_OF_RANGE)
            with m.Elif(~has_next & raw_next):
                fail(VirtqErrorKind.READABLE_AFTER_WRITABLE)
            with m.Elif(~has_next & in_table & (t_left == 0) & t_err):
                fail(VirtqErrorKind.DMA_READ_ERROR)
            with m.Else():
                # A good descriptor: hand it out.
                commit_now = ~has_next & ~(in_table & (t_left != 0))
                m.d.comb += [
                    self.out.valid.eq(1),
                    out.desc.eq(1),
                    out.end.eq(commit_now),
                ]
                with m.If(self.out.ready):
                    m.d.sync += [
                        visited.eq(visited_next),
                        t_visited.eq(t_visited + in_table),
                        ndesc.eq(ndesc_next),
                        wsum.eq(wsum_next),
                        raw.eq(raw_next),
                        seen_write.eq(seen_write | is_write),
                        emitted.eq(~commit_now),
                    ]
                    with m.If(has_next):
                        m.d.sync += e.eq(d.next)
                        # Stay on the block buffer while the chain stays in the block.
                        fast = (~in_table & hits(d.next, g_base, g_count)
                                & (visited_next != size) & (ndesc_next != max_chain))
                        with m.If(fast):
                            m.d.comb += [
                                buf_r.addr.eq(buf_addr(d.next, g_off)),
                                buf_r.en.eq(1),
                            ]
                            m.d.sync += src_mem.eq(1)
                        with m.Else():
                            m.d.sync += state.eq(_State.FETCH)
                    with m.Elif(~commit_now):
                        m.d.sync += state.eq(_State.END)
                    with m.Else():
                        # Committed: take the next head at once (from this group or the
                        # next) if its chain starts in its block.
                        with m.If(fast_ok):
                            take_head()
                            start_from_buffer()
                        with m.Else():
                            m.d.sync += state.eq(_State.HEAD)

        # --- FETCH: descriptor e is not at hand -------------------------------------------
        with m.If(state == _State.FETCH):
            with m.If(~in_table & (visited == size)):
                fail(VirtqErrorKind.CHAIN_TOO_LONG)      # more descriptors than the table
            with m.Elif(in_table & (t_visited == t_entries)):
                fail(VirtqErrorKind.CHAIN_TOO_LONG)
            with m.Elif(ndesc == max_chain):
                fail(VirtqErrorKind.CHAIN_TOO_LONG)      # the device's own limit
            with m.Elif(~in_table & hits(e, g_base, g_count)):
                m.d.comb += [
                    buf_r.addr.eq(buf_addr(e, g_off)),
                    buf_r.en.eq(1),
                ]
                m.d.sync += [state.eq(_State.PROC), src_mem.eq(1)]
            with m.Elif(in_table & (t_left != 0)):
                with m.If((e >= t_pos) & (e - t_pos < t_left)):
                    m.d.sync += state.eq(_State.TABLE_READ)
                with m.Else():
                    m.d.sync += [state.eq(_State.TABLE_DRAIN), resume.eq(_State.FETCH)]
            with m.Elif(in_table & t_err):
                fail(VirtqErrorKind.DMA_READ_ERROR)
            with m.Elif(~self.quiesce):
                m.d.sync += [
                    fetch_rd.payload.addr.eq(Mux(in_table, t_addr, cfg.desc)
                                             + e * VIRTQ_DESC_BYTES),
                    fetch_rd.payload.len.eq(VIRTQ_DESC_BYTES),
                    state.eq(_State.SINGLE_CMD),
                ]
                m.d.comb += self.events.rd_desc_chain.eq(1)

        m.d.comb += fetch_rd.valid.eq((state == _State.SINGLE_CMD)
                                      | (state == _State.TABLE_CMD))
        with m.If(fetch_rd.valid & fetch_rd.ready):
            m.d.sync += [state.eq(Mux(state == _State.SINGLE_CMD, _State.SINGLE_DATA,
                                      _State.FETCH)), half.eq(0)]

        # --- ring_rd data: single descriptors and table entries ----------------------------
        rdata = self.ring_rd.data
        taking = Signal()
        m.d.comb += taking.eq(
            (state == _State.SINGLE_DATA) | (state == _State.TABLE_READ)
            | (state == _State.TABLE_DRAIN))
        m.d.comb += rdata.ready.eq(taking)
        beat = rdata.valid & taking
        entry_done = Signal()           # a whole descriptor arrived with this beat
        entry = Signal(VirtqDesc)
        if bpd == 1:
            m.d.comb += [entry_done.eq(beat), entry.eq(rdata.payload.data)]
        else:
            m.d.comb += [entry_done.eq(beat & half),
                         entry.eq(Cat(lo_ring, rdata.payload.data))]
            with m.If(beat):
                m.d.sync += [lo_ring.eq(rdata.payload.data), half.eq(~half)]

        with m.If(state == _State.SINGLE_DATA):
            with m.If(entry_done):
                with m.If(rdata.payload.error.as_value() != 0):
                    fail(VirtqErrorKind.DMA_READ_ERROR)
                with m.Else():
                    m.d.sync += [dreg.eq(entry), src_mem.eq(0), state.eq(_State.PROC)]

        table_entry = entry_done & ((state == _State.TABLE_READ)
                                    | (state == _State.TABLE_DRAIN))
        with m.If(table_entry):
            m.d.sync += [t_left.eq(t_left - 1), t_pos.eq(t_pos + 1)]
            with m.If(rdata.payload.last):
                m.d.sync += t_err.eq(rdata.payload.error.as_value() != 0)
        with m.If((state == _State.TABLE_READ) & entry_done & (t_pos == e)):
            m.d.sync += [dreg.eq(entry), src_mem.eq(0), state.eq(_State.PROC)]
        with m.If(state == _State.TABLE_DRAIN):
            with m.If((t_left == 0) | (entry_done & (t_left == 1))):
                m.d.sync += state.eq(resume)

        # --- END / ERROR: the verdict, once the table read is complete --------------------
        with m.If(state == _State.END):
            with m.If(t_left != 0):
                m.d.sync += [state.eq(_State.TABLE_DRAIN), resume.eq(_State.END)]
            with m.Elif(t_err):
                fail(VirtqErrorKind.DMA_READ_ERROR)
            with m.Else():
                m.d.comb += [
                    self.out.valid.eq(1),
                    out.end.eq(1),
                    out.writable_len.eq(wsum),
                ]
                with m.If(self.out.ready):
                    m.d.sync += state.eq(_State.HEAD)

        report = Signal()
        with m.If(state == _State.ERROR):
            with m.If(t_left != 0):
                m.d.sync += [state.eq(_State.TABLE_DRAIN), resume.eq(_State.ERROR)]
            with m.Elif(emitted):
                m.d.comb += [
                    self.out.valid.eq(1),
                    out.end.eq(1),
                    out.abort.eq(1),
                ]
                with m.If(self.out.ready):
                    m.d.comb += report.eq(1)
                    m.d.sync += state.eq(_State.HEAD)
            with m.Else():
                m.d.comb += report.eq(1)
                m.d.sync += state.eq(_State.HEAD)

        stop = Signal(nq)
        for q in range(nq):
            m.d.comb += stop[q].eq(report & (cur_q == q))
        m.d.comb += [
            self.stop.eq(stop),
            self.error.valid.eq(report),
            self.error.payload.queue.eq(cur_q),
            self.error.payload.kind.eq(err_kind),
            self.block_free.eq(free_group),
            self.quiet.eq(~fetch_rd.valid),
        ]
        return m
