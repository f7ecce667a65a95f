"""Reads the available rings: doorbells in, descriptor heads and descriptor block reads out."""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import ReadChannelSignature, WriteChannelSignature, dma_cmd_layout
from hdl.virtio.round_robin import round_robin
from hdl.virtio.spec import (
    AVAIL_IDX_OFFSET, AVAIL_RING_OFFSET, USED_RING_OFFSET, VIRTQ_AVAIL_ELEM_BYTES,
    VIRTQ_DESC_BYTES, VIRTQ_USED_ELEM_BYTES,
)
from hdl.virtio.virtqueue_port import QUEUE_BITS, VirtqConfig, VirtqError, VirtqErrorKind, \
    VirtqFeatures

__all__ = ["AvailFetcher", "head_layout", "block_layout", "queue_usable", "check_low_water"]

head_layout = data.StructLayout({
    "queue": unsigned(QUEUE_BITS),
    "head": unsigned(16),       # the available ring entry: a descriptor index
})
"""One available ring entry handed to the chain walker."""


def block_layout(max_block: int, max_batch: int) -> data.StructLayout:
    """A *group* of consecutive heads of one queue and the descriptor block read for it:
    descriptors ``base .. base + count - 1`` of the queue's table (``count`` may be 0: no
    read was issued), followed by ``heads`` entries on the heads stream."""
    return data.StructLayout({
        "queue": unsigned(QUEUE_BITS),
        "base": unsigned(16),
        "count": range(max_block + 1),
        "heads": range(max_batch + 1),
    })


def queue_usable(cfg, max_queue_size: int):
    """Whether a queue's configuration can be served: enabled, and its size a power of two
    from 1 to ``max_queue_size`` (virtio 1.2 §2.7); anything else is treated as disabled."""
    size = cfg.size
    return (cfg.enable & (size != 0) & ((size & (size - 1)) == 0)
            & (size <= max_queue_size))


def check_low_water(low_water, reorder_depth: int) -> None:
    """Raise ``ValueError`` unless ``low_water`` is an integer from 1 to ``reorder_depth``."""
    if (not isinstance(low_water, int) or isinstance(low_water, bool)
            or not 1 <= low_water <= reorder_depth):
        raise ValueError(f"fetch low water must be an integer from 1 to the reorder depth "
                         f"{reorder_depth}, not {low_water!r}")


def _min(*values):
    """The smallest of ``values``, as a balanced tree of compares (log2(n) deep, not n - 1)."""
    if len(values) == 1:
        return values[0]
    half = len(values) // 2
    low, high = _min(*values[:half]), _min(*values[half:])
    return Mux(high < low, high, low)


class AvailFetcher(wiring.Component):
    """Fetches ``avail->idx`` and available ring entries for every queue, fairly.

    Per queue it keeps ``next_avail`` (the next available ring index to fetch, 16 bits,
    wrapping), ``shadow`` (``avail->idx`` as last read), a doorbell flag and the number of
    elements in flight (fetched, not yet retired from the used ring). Queues are served round
    robin. A doorbell makes the queue read ``avail->idx`` (virtio 1.2 §2.7.13.3); known
    entries are then read in batches of up to ``max_batch`` (never across the end of the ring,
    never more than the reorder credit ``reorder_depth`` minus the elements in flight, never
    more than the walker's FIFOs have room for, so the ring read's data is always taken).

    A queue with more than ``low_water`` elements in flight reads neither ``avail->idx`` nor
    entries: a doorbell stays pending until enough elements retire, and the queue then
    fetches everything the driver published meanwhile with one index read, one ring read and
    (IN_ORDER) one descriptor block read. While the backend has ``low_water`` elements to
    work on, this turns a driver that adds one buffer per completion (a deep, saturated
    queue) from four control reads per buffer into about one per batch. ``low_water`` equal
    to ``reorder_depth`` fetches whenever there is credit.

    ``avail->idx`` more than Queue Size ahead of ``next_avail`` (or behind it) stops the queue
    with AVAIL_IDX_JUMP (``docs/robustness.md``).

    Each batch's heads go out on ``heads`` in ring order. They are cut into *groups*, each
    with one descriptor read, described on ``blocks`` once the group is complete:

    * without IN_ORDER every head is a group of its own, with a 16-byte read of its head
      descriptor;
    * with IN_ORDER (§2.7.9: the driver uses descriptors in ring order) a group is a run of
      increasing heads whose chains fit one block of at most ``max_block`` descriptors; its
      read covers ``first head .. last head + s - 1``, ``s`` being the last chain's expected
      length: the distance to the head that follows it when there is one, else between the
      group's last two heads, else the queue's last distance between consecutive heads. The
      walker checks every chain against the block and reads what the guess missed.

    The walker's FIFOs hold ``4 * max_batch`` heads and groups, so up to four batches of
    descriptor reads are in flight while the walker works.

    With EVENT_IDX, once a queue has fetched every entry it knows of, ``avail_event`` is set
    to ``next_avail`` (§2.7.10) and ``avail->idx`` is read again afterwards, so a buffer
    published in between is not missed.

    Reset (``rst``, or the engine's clear on a device reset): every queue at index 0, no
    doorbell pending, nothing in flight, the FIFOs empty.

    Parameters
    ----------
    num_queues, max_queue_size, reorder_depth, width : int
        As :class:`~hdl.virtio.virtqueue_engine.VirtqueueEngine`.
    max_batch : int
        Most available ring entries per read (power of two).
    max_block : int
        Most descriptors per block read (power of two).
    low_water : int or None
        Elements in flight at or below which a queue reads its available ring, 1 to
        ``reorder_depth``; ``None`` (default) means ``reorder_depth``.

    Attributes
    ----------
    config, features, driver_ok, stopped, quiesce : In
        Queue configuration; negotiated features; DRIVER_OK; queues stopped on an error
        (never fetched again until a reset); stop creating DMA commands (device reset).
    doorbell : In(stream.Signature(16))
        A queue index to look at; indices of absent or disabled queues are ignored.
    credit : In(stream.Signature(QUEUE_BITS, always_ready=True))
        One element of that queue left the reorder buffer.
    ring_rd : Out(ReadChannelSignature(width))
        Reads of ``avail->idx`` and of available ring entries.
    desc_cmd : Out(stream.Signature(dma_cmd_layout))
        Descriptor block reads, in group order (the walker receives their data).
    heads : Out(stream.Signature(head_layout))
    blocks : Out(stream.Signature(block_layout(max_block, max_batch)))
        A group's description, sent once its last head is on ``heads``.
    block_free : In(1)
        The walker finished a group.
    ae_wr : Out(WriteChannelSignature(width))
        ``avail_event`` writes.
    stop : Out(num_queues)
        Pulse: these queues stop (error); ``error`` tells one of them and why.
    error : Out(stream.Signature(VirtqError, always_ready=True))
    events : Out(StructLayout)
        One-cycle pulses for the statistics: ``rd_avail_idx``, ``rd_avail_ring``,
        ``wr_avail_event``.
    quiet : Out(1)
        No DMA command offered or owed: nothing in ``desc_cmd``, no write in progress.
    """

    def __init__(self, *, num_queues: int, max_queue_size: int, reorder_depth: int,
                 width: int = 64, max_batch: int = 32, max_block: int = 64,
                 low_water: int | None = None):
        for name, value in (("max_batch", max_batch), ("max_block", max_block)):
            if value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, not {value}")
        if low_water is None:
            low_water = reorder_depth
        check_low_water(low_water, reorder_depth)
        self.low_water = low_water
        self.num_queues = num_queues
        self.max_queue_size = max_queue_size
        self.reorder_depth = reorder_depth
        self.width = width
        self.max_batch = max_batch
        self.max_block = max_block
        self.fifo_depth = 4 * max_batch
        super().__init__({
            "config": In(data.ArrayLayout(VirtqConfig, num_queues)),
            "features": In(VirtqFeatures),
            "driver_ok": In(1),
            "stopped": In(num_queues),
            "quiesce": In(1),
            "doorbell": In(stream.Signature(unsigned(16))),
            "credit": In(stream.Signature(unsigned(QUEUE_BITS), always_ready=True)),
            "ring_rd": Out(ReadChannelSignature(width)),
            "desc_cmd": Out(stream.Signature(dma_cmd_layout)),
            "heads": Out(stream.Signature(head_layout)),
            "blocks": Out(stream.Signature(block_layout(max_block, max_batch))),
            "block_free": In(1),
            "ae_wr": Out(WriteChannelSignature(width)),
            "stop": Out(num_queues),
            "error": Out(stream.Signature(VirtqError, always_ready=True)),
            "events": Out(data.StructLayout({
                "rd_avail_idx": 1, "rd_avail_ring": 1, "wr_avail_event": 1})),
            "quiet": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nq = self.num_queues
        depth = self.reorder_depth
        epb = self.width // 16                  # available ring entries per data beat
        fifo_depth = self.fifo_depth
        max_block = self.max_block

        cfg = self.config
        usable = Signal(nq)
        for q in range(nq):
            m.d.comb += usable[q].eq(self.driver_ok & queue_usable(cfg[q], self.max_queue_size)
                                     & ~self.stopped[q])

        # --- per-queue state ----------------------------------------------------------------
        kick = Signal(nq)
        idx_busy = Signal(nq)
        shadow = Signal(data.ArrayLayout(16, nq))
        next_avail = Signal(data.ArrayLayout(16, nq))
        inflight = Signal(data.ArrayLayout(range(depth + 1), nq))
        stride = Signal(data.ArrayLayout(range(max_block + 1), nq), init=[1] * nq)
        last_head = Signal(data.ArrayLayout(16, nq))     # IN_ORDER: the last head fetched
        ae_val = Signal(data.ArrayLayout(16, nq))
        ae_req = Signal(nq)

        # --- FIFOs towards the walker (space reserved before each ring read) ----------------
        m.submodules.head_fifo = head_fifo = fifo.SyncFIFOBuffered(
            width=data.Layout.cast(head_layout).size, depth=fifo_depth)
        blk_layout = block_layout(max_block, self.max_batch)
        m.submodules.block_fifo = block_fifo = fifo.SyncFIFOBuffered(
            width=data.Layout.cast(blk_layout).size, depth=fifo_depth)
        m.submodules.cmd_fifo = cmd_fifo = fifo.SyncFIFOBuffered(
            width=data.Layout.cast(dma_cmd_layout).size, depth=fifo_depth)
        m.d.comb += [
            self.heads.valid.eq(head_fifo.r_rdy),
            self.heads.payload.eq(head_fifo.r_data),
            head_fifo.r_en.eq(self.heads.ready),
            self.blocks.valid.eq(block_fifo.r_rdy),
            self.blocks.payload.eq(block_fifo.r_data),
            block_fifo.r_en.eq(self.blocks.ready),
            self.desc_cmd.valid.eq(cmd_fifo.r_rdy),
            self.desc_cmd.payload.eq(cmd_fifo.r_data),
            cmd_fifo.r_en.eq(self.desc_cmd.ready),
        ]
        heads_res = Signal(range(fifo_depth + 1))     # reserved or queued heads
        blocks_res = Signal(range(fifo_depth + 1))    # reserved, queued or unfinished groups
        heads_free = Signal(range(fifo_depth + 1))
        blocks_free = Signal(range(fifo_depth + 1))
        m.d.comb += [
            heads_free.eq(fifo_depth - heads_res),
            blocks_free.eq(fifo_depth - blocks_res),
        ]

        # --- ring read issue ----------------------------------------------------------------
        tag_layout = data.StructLayout({
            "entries": 1,                   # 0: avail->idx, 1: ring entries
            "queue": unsigned(QUEUE_BITS),
            "count": range(self.max_batch + 1),
        })
        m.submodules.tags = tags = fifo.SyncFIFOBuffered(
            width=tag_layout.size, depth=4)
        tag_in = data.View(tag_layout, tags.w_data)
        tag = data.View(tag_layout, tags.r_data)

        want_idx = Signal(nq)
        want_ent = Signal(nq)
        for q in range(nq):
            # Whether the queue is at or below its low water mark, registered: a cycle late
            # is harmless, the reorder credit below is exact.
            fetching = Signal(init=1, name=f"fetching{q}")
            if self.low_water < depth:
                m.d.sync += fetching.eq(inflight[q] <= self.low_water)
            m.d.comb += [
                want_idx[q].eq(usable[q] & kick[q] & ~idx_busy[q] & fetching),
                # Known entries are fetched while a new avail->idx is being read: waiting
                # for it would stall the queue for a read's round trip.
                want_ent[q].eq(usable[q] & (shadow[q] != next_avail[q])
                               & (inflight[q] < depth) & fetching),
            ]
        rr_last = Signal(range(max(nq, 2)))
        can_issue = (~self.ring_rd.cmd.valid & tags.w_rdy & ~self.quiesce
                     & (heads_free != 0) & (blocks_free != 0))
        any_want, sel = round_robin(m, want_idx | want_ent, rr_last, name="issue")
        sel_cfg = cfg[sel]
        sel_mask = Signal(16)
        m.d.comb += sel_mask.eq(sel_cfg.size - 1)
        sel_next = next_avail[sel]
        pending = Signal(16)
        credits = Signal(range(depth + 1))
        to_end = Signal(17)
        count = Signal(range(self.max_batch + 1))
        m.d.comb += [
            pending.eq(shadow[sel] - sel_next),
            credits.eq(depth - inflight[sel]),
            to_end.eq(sel_cfg.size - (sel_next & sel_mask)),
            count.eq(_min(pending, credits, to_end, Const(self.max_batch),
                          heads_free, blocks_free)),
        ]
        issue = can_issue & any_want
        issue_idx = Signal()
        issue_ent = Signal()
        m.d.comb += [
            issue_idx.eq(issue & want_idx.bit_select(sel, 1)),
            issue_ent.eq(issue & ~want_idx.bit_select(sel, 1)),
        ]
        m.d.comb += [
            tags.w_en.eq(issue),
            tag_in.queue.eq(sel),
            tag_in.entries.eq(issue_ent),
            tag_in.count.eq(count),
        ]
        with m.If(self.ring_rd.cmd.valid & self.ring_rd.cmd.ready):
            m.d.sync += self.ring_rd.cmd.valid.eq(0)
        with m.If(issue):
            m.d.sync += [
                rr_last.eq(sel),
                self.ring_rd.cmd.valid.eq(1),
            ]
        with m.If(issue_idx):
            m.d.sync += [
                self.ring_rd.cmd.payload.addr.eq(sel_cfg.driver + AVAIL_IDX_OFFSET),
                self.ring_rd.cmd.payload.len.eq(2),
            ]
        with m.If(issue_ent):
            m.d.sync += [
                self.ring_rd.cmd.payload.addr.eq(
                    sel_cfg.driver + AVAIL_RING_OFFSET
                    + (sel_next & sel_mask) * VIRTQ_AVAIL_ELEM_BYTES),
                self.ring_rd.cmd.payload.len.eq(count * VIRTQ_AVAIL_ELEM_BYTES),
            ]
        m.d.comb += [
            self.events.rd_avail_idx.eq(issue_idx),
            self.events.rd_avail_ring.eq(issue_ent),
        ]

        # --- ring read data -----------------------------------------------------------------
        beats_per_batch = -(-self.max_batch * VIRTQ_AVAIL_ELEM_BYTES * 8 // self.width)
        m.submodules.beats = beats = fifo.SyncFIFOBuffered(
            width=self.width, depth=max(2, 2 * beats_per_batch))
        batch_layout = data.StructLayout({
            "queue": unsigned(QUEUE_BITS),
            "count": range(self.max_batch + 1),
            "error": 1,
        })
        m.submodules.batches = batches = fifo.SyncFIFOBuffered(
            width=batch_layout.size, depth=4)
        batch_in = data.View(batch_layout, batches.w_data)

        rdata = self.ring_rd.data
        rx_idx = Signal()               # an avail->idx beat is taken this cycle
        with m.If(tags.r_rdy):
            with m.If(tag.entries):
                m.d.comb += [
                    rdata.ready.eq(beats.w_rdy & batches.w_rdy),
                    beats.w_en.eq(rdata.valid & beats.w_rdy & batches.w_rdy),
                    beats.w_data.eq(rdata.payload.data),
                    batches.w_en.eq(rdata.valid & rdata.ready & rdata.payload.last),
                    batch_in.queue.eq(tag.queue),
                    batch_in.count.eq(tag.count),
                    batch_in.error.eq(rdata.payload.error.as_value() != 0),
                ]
            with m.Else():
                m.d.comb += [
                    rdata.ready.eq(1),
                    rx_idx.eq(rdata.valid),
                ]
        m.d.comb += tags.r_en.eq(rdata.valid & rdata.ready & rdata.payload.last)

        rx_q = tag.queue
        rx_value = Signal(16)
        rx_pending = Signal(16)
        rx_size = cfg[rx_q].size
        rx_error = Signal()
        rx_jump = Signal()
        m.d.comb += [
            rx_value.eq(rdata.payload.data[:16]),
            rx_pending.eq(rx_value - next_avail[rx_q]),
            rx_error.eq(rx_idx & (rdata.payload.error.as_value() != 0)),
            rx_jump.eq(rx_idx & ~rx_error & (rx_pending > rx_size)),
        ]

        # --- batch processing: heads, groups, block reads ----------------------------------
        cur = Signal(batch_layout)
        busy = Signal()                 # a batch is being processed
        finishing = Signal()            # all heads pushed; close the last group
        position = Signal(range(self.max_batch + 1))
        lane = Signal(range(max(epb, 2)))
        g_active = Signal()
        g_base = Signal(16)
        g_prev = Signal(16)
        g_prev2 = Signal(16)
        g_heads = Signal(range(self.max_batch + 1))
        groups = Signal(range(self.max_batch + 1))   # groups closed in this batch

        p_q = cur.queue
        p_cfg = cfg[p_q]
        p_size = p_cfg.size
        in_order = self.features.in_order
        start = ~busy & batches.r_rdy & ~self.quiesce
        m.d.comb += batches.r_en.eq(start)
        with m.If(start):
            m.d.sync += [
                cur.eq(batches.r_data),
                busy.eq(1),
                finishing.eq(0),
                position.eq(0),
                lane.eq(0),
                g_active.eq(0),
                groups.eq(0),
            ]

        # Three stages, so that no cycle holds more than one or two carry chains (the
        # grouping decision was the device's critical path on the ECP5):
        #   1. a head leaves the beat FIFO into ``h_head``;
        #   2. it joins the open group or opens a new one; a closing group's figures are
        #      registered into ``c_*``;
        #   3. the closing group's block description and descriptor read are written.
        head = Signal(16)
        m.d.comb += head.eq(beats.r_data.word_select(lane, 16))
        step = busy & ~finishing & ~self.quiesce & beats.r_rdy & (position != cur.count)
        last_entry = position + 1 == cur.count
        with m.If(step):
            m.d.sync += [
                position.eq(position + 1),
                lane.eq(Mux((lane == epb - 1) | last_entry, 0, lane + 1)),
            ]
            m.d.comb += beats.r_en.eq((lane == epb - 1) | last_entry)
            with m.If(last_entry):
                m.d.sync += finishing.eq(1)

        # Stage 1. A head waiting here while the engine quiesces stays until the reset.
        h_valid = Signal()
        h_head = Signal(16)
        with m.If(step):
            m.d.sync += [h_valid.eq(~cur.error), h_head.eq(head)]
        with m.Elif(~self.quiesce):
            m.d.sync += h_valid.eq(0)

        # Stage 2: does this head continue the current group? (IN_ORDER only, §2.7.9)
        good = h_valid & ~self.quiesce
        drained = busy & finishing & ~h_valid & ~self.quiesce   # every head has had stage 2
        continues = Signal()
        m.d.comb += continues.eq(g_active & in_order & (h_head > g_prev) & (h_head < p_size)
                                 & (h_head - g_base < max_block))
        close = Signal()                # close the current group now
        m.d.comb += close.eq(g_active & ((good & ~continues) | drained))
        with m.If(good):
            m.d.comb += [
                head_fifo.w_en.eq(1),
                head_fifo.w_data.eq(Cat(p_q, h_head)),
            ]
            with m.If(continues):
                m.d.sync += [
                    g_prev2.eq(g_prev),
                    g_prev.eq(h_head),
                    g_heads.eq(g_heads + 1),
                ]
            with m.Else():
                m.d.sync += [
                    g_active.eq(1),
                    g_base.eq(h_head),
                    g_prev.eq(h_head),
                    g_heads.eq(1),
                ]

        head_step = Signal(16)
        m.d.comb += head_step.eq(h_head - last_head[p_q])

        # The last chain's length: up to the head that closes the group if there is one
        # (IN_ORDER drivers place chains back to back, §2.7.9), else as long as the one
        # before it, else as long as the queue's chains have been.
        guess = Signal(range(max_block + 1))
        to_head = Signal(16)
        m.d.comb += to_head.eq(h_head - g_prev)
        with m.If(good & (to_head != 0) & (to_head <= max_block)):
            m.d.comb += guess.eq(to_head)
        with m.Elif(g_heads >= 2):
            m.d.comb += guess.eq(_min(g_prev - g_prev2, Const(max_block)))
        with m.Else():
            m.d.comb += guess.eq(stride[p_q])

        c_valid = Signal()
        c_base = Signal(16)
        c_heads = Signal(range(self.max_batch + 1))
        c_reach = Signal(16)            # last head - base
        c_guess = Signal(range(max_block + 1))
        c_room = Signal(16)             # descriptors from base to the end of the table
        c_outside = Signal()            # base is not a descriptor of the table
        m.d.sync += c_valid.eq(close)
        with m.If(close):
            m.d.sync += [
                c_base.eq(g_base),
                c_heads.eq(g_heads),
                c_reach.eq(g_prev - g_base),
                c_guess.eq(guess),
                c_room.eq(p_size - g_base),
                c_outside.eq(g_base >= p_size),
            ]
            m.d.sync += groups.eq(groups + 1)
            with m.If(~good):
                m.d.sync += g_active.eq(0)

        # Stage 3: the block read of a closed group (it completes even while quiescing: the
        # decision was taken before; ``quiet`` waits for it).
        span = Signal(17)
        blk_count = Signal(range(max_block + 1))
        m.d.comb += span.eq(c_reach + c_guess)
        with m.If(c_outside):
            m.d.comb += blk_count.eq(0)
        with m.Elif(~in_order):
            m.d.comb += blk_count.eq(1)
        with m.Else():
            m.d.comb += blk_count.eq(_min(span, c_room, Const(max_block)))
        blk_in = data.View(blk_layout, block_fifo.w_data)
        cmd_in = data.View(dma_cmd_layout, cmd_fifo.w_data)
        with m.If(c_valid):
            m.d.comb += [
                block_fifo.w_en.eq(1),
                blk_in.queue.eq(p_q),
                blk_in.base.eq(c_base),
                blk_in.count.eq(blk_count),
                blk_in.heads.eq(c_heads),
                cmd_fifo.w_en.eq(blk_count != 0),
                cmd_in.addr.eq(p_cfg.desc + c_base * VIRTQ_DESC_BYTES),
                cmd_in.len.eq(blk_count * VIRTQ_DESC_BYTES),
            ]

        # End of a batch: release unused reservations; maybe ask for an avail_event write.
        done_batch = drained & ~g_active & ~c_valid
        unused_blocks = Signal(range(self.max_batch + 1))
        with m.If(cur.error):
            m.d.comb += unused_blocks.eq(cur.count)
        with m.Else():
            m.d.comb += unused_blocks.eq(cur.count - groups)
        with m.If(done_batch):
            m.d.sync += busy.eq(0)
        batch_error = Signal()
        m.d.comb += batch_error.eq(done_batch & cur.error)

        # --- avail_event writes (EVENT_IDX, §2.7.10) ----------------------------------------
        ae_state = Signal(2)            # 0 idle, 1 command, 2 data, 3 waiting for done
        ae_q = Signal(range(max(nq, 2)))
        ae_value = Signal(16)
        ae_last = Signal(range(max(nq, 2)))
        ae_any, ae_sel = round_robin(m, ae_req & usable, ae_last, name="ae")
        ae_start = (ae_state == 0) & ae_any & ~self.quiesce
        ae_cfg = cfg[ae_sel]
        with m.If(ae_start):
            m.d.sync += [
                ae_state.eq(1),
                ae_q.eq(ae_sel),
                ae_last.eq(ae_sel),
                ae_value.eq(next_avail[ae_sel]),
                self.ae_wr.cmd.payload.addr.eq(
                    ae_cfg.device + USED_RING_OFFSET + ae_cfg.size * VIRTQ_USED_ELEM_BYTES),
                self.ae_wr.cmd.payload.len.eq(2),
            ]
        m.d.comb += [
            self.ae_wr.cmd.valid.eq(ae_state == 1),
            self.ae_wr.data.valid.eq(ae_state == 2),
            self.ae_wr.data.payload.data.eq(ae_value),
            self.ae_wr.data.payload.last.eq(1),
            self.ae_wr.done.ready.eq(ae_state == 3),
            self.events.wr_avail_event.eq(ae_start),
        ]
        with m.If(self.ae_wr.cmd.valid & self.ae_wr.cmd.ready):
            m.d.sync += ae_state.eq(2)
        with m.If(self.ae_wr.data.valid & self.ae_wr.data.ready):
            m.d.sync += ae_state.eq(3)
        ae_done = self.ae_wr.done.valid & self.ae_wr.done.ready
        ae_fail = ae_done & (self.ae_wr.done.payload.error.as_value() != 0)
        with m.If(ae_done):
            m.d.sync += ae_state.eq(0)

        # --- per-queue state updates --------------------------------------------------------
        db = self.doorbell
        m.d.comb += db.ready.eq(1)
        for q in range(nq):
            sel_q = sel == q
            with m.If(issue_idx & sel_q):
                m.d.sync += [kick[q].eq(0), idx_busy[q].eq(1)]
            with m.If(rx_idx & (rx_q == q)):
                m.d.sync += idx_busy[q].eq(0)
                with m.If(~rx_error & ~rx_jump):
                    m.d.sync += shadow[q].eq(rx_value)
            # A doorbell (or a finished avail_event write) wins over the read issued in the
            # same cycle: the read may have missed what the doorbell announces.
            with m.If((db.valid & (db.payload == q) & self.driver_ok & cfg[q].enable)
                      | (ae_done & (ae_q == q))):
                m.d.sync += kick[q].eq(1)
            with m.If(issue_ent & sel_q):
                m.d.sync += next_avail[q].eq(next_avail[q] + count)
            m.d.sync += inflight[q].eq(
                inflight[q] + Mux(issue_ent & sel_q, count, 0)
                - (self.credit.valid & (self.credit.payload == q)))
            # Learn the queue's chain length from the distance between consecutive heads.
            with m.If(good & in_order & (p_q == q)):
                m.d.sync += last_head[q].eq(h_head)
                with m.If((head_step != 0) & (head_step <= max_block)):
                    m.d.sync += stride[q].eq(head_step)
            with m.If(ae_start & (ae_sel == q)):
                m.d.sync += [ae_req[q].eq(0), ae_val[q].eq(next_avail[q])]
            with m.If(done_batch & ~cur.error & (p_q == q) & self.features.event_idx
                      & (next_avail[q] == shadow[q]) & (ae_val[q] != next_avail[q])):
                m.d.sync += ae_req[q].eq(1)

        # Reservations: taken at issue, given back as the walker takes heads and finishes
        # groups, and for whatever a batch did not use.
        dropped_heads = Mux(batch_error, cur.count, 0)
        m.d.sync += [
            heads_res.eq(heads_res + Mux(issue_ent, count, 0)
                         - (self.heads.valid & self.heads.ready) - dropped_heads),
            blocks_res.eq(blocks_res + Mux(issue_ent, count, 0) - self.block_free
                          - Mux(done_batch, unused_blocks, 0)),
        ]

        # --- errors -------------------------------------------------------------------------
        stop = Signal(nq)
        err = self.error
        with m.If(rx_jump | rx_error):
            m.d.comb += [
                err.valid.eq(1),
                err.payload.queue.eq(rx_q),
                err.payload.kind.eq(Mux(rx_jump, VirtqErrorKind.AVAIL_IDX_JUMP,
                                        VirtqErrorKind.DMA_READ_ERROR)),
            ]
        with m.Elif(batch_error):
            m.d.comb += [
                err.valid.eq(1),
                err.payload.queue.eq(p_q),
                err.payload.kind.eq(VirtqErrorKind.DMA_READ_ERROR),
            ]
        with m.Elif(ae_fail):
            m.d.comb += [
                err.valid.eq(1),
                err.payload.queue.eq(ae_q),
                err.payload.kind.eq(VirtqErrorKind.DMA_WRITE_ERROR),
            ]
        for q in range(nq):
            m.d.comb += stop[q].eq(((rx_jump | rx_error) & (rx_q == q))
                                   | (batch_error & (p_q == q))
                                   | (ae_fail & (ae_q == q)))
        m.d.comb += [
            self.stop.eq(stop),
            self.quiet.eq(~self.ring_rd.cmd.valid & (cmd_fifo.level == 0) & ~c_valid
                          & ((ae_state == 0) | (ae_state == 3))),
        ]
        return m
