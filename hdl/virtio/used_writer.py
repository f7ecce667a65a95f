"""Writes retired elements to the used rings (virtio 1.2 §2.7.8, §2.7.9)."""
from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import WriteChannelSignature
from hdl.virtio.round_robin import round_robin
from hdl.virtio.spec import USED_IDX_OFFSET, USED_RING_OFFSET, VIRTQ_USED_ELEM_BYTES
from hdl.virtio.virtqueue_port import QUEUE_BITS, VirtqConfig, VirtqError, VirtqErrorKind, \
    VirtqFeatures

__all__ = ["UsedWriter", "idx_done_layout"]

idx_done_layout = data.StructLayout({
    "queue": unsigned(QUEUE_BITS),
    "idx": unsigned(16),
})
"""A ``used->idx`` write that has been handed to the link: the queue and the value written."""


class _Job(enum.Enum, shape=2):
    ELEMS = 0       # n used elements from the element FIFO
    RUN = 1         # one used element from the job itself
    IDX = 2         # a used->idx value


class UsedWriter(wiring.Component):
    """Turns the reorder buffers' retire streams into used ring writes.

    Queues with retired elements are served round robin; a queue, once picked, keeps the
    writer while its reorder buffer promises more (``last == 0``). What one turn writes:

    * with IN_ORDER, a *run*: consecutive elements up to one marked ``last`` or *partial*
      (written length below its writable length, which must end a run: §2.7.9, see
      ``docs/robustness.md``) become ONE used element at the ring slot of the run's first
      element (``used->idx % Queue Size`` before the run), with ``id`` = the head of the run's
      last element and ``len`` = its written length;
    * without IN_ORDER, one used element per element, in retire order (which is completion
      order), at consecutive slots, up to ``max_used_batch`` per turn and never across the end
      of the ring, written with one DMA command.

    Each turn then writes ``used->idx`` (advanced by the number of buffers) with a second
    command on the same channel, so the used elements reach memory first (§2.7.8.2). The
    command for the next turn may be issued while the data of this one is still going out.
    When a ``used->idx`` write is ``done``, ``idx_done`` tells the notifier.

    Reset: every queue's ``used->idx`` back to 0, nothing queued (under ``quiesce`` the
    data of every command already issued is still sent).

    Parameters
    ----------
    num_queues, reorder_depth, width : int
        As the engine's.
    max_used_batch : int
        Most used elements per write command without IN_ORDER (power of two).
    retire_layout : data.Layout
        The reorder buffers' retire payload (``seq``, ``payload`` of
        :data:`~hdl.virtio.element_dispatcher.used_payload_layout`, ``last``).

    Attributes
    ----------
    retire : In(stream.Signature(retire_layout)).array(num_queues)
    config, features, quiesce : In
    wr : Out(WriteChannelSignature(width))
        Used ring and ``used->idx`` writes.
    credit : Out(stream.Signature(QUEUE_BITS, always_ready=True))
        One element of that queue left its reorder buffer.
    idx_done : Out(stream.Signature(idx_done_layout, always_ready=True))
    stop, error : Out
        A failed write (DMA_WRITE_ERROR) stops its queue.
    events : Out(StructLayout)
        Pulses ``wr_used_elem``, ``wr_used_idx`` (commands issued), ``used_elems`` (a used
        element was formed), ``buffers_used`` (an element was taken).
    quiet : Out(1)
        No command offered and no data owed.
    """

    def __init__(self, *, num_queues: int, reorder_depth: int, width: int,
                 retire_layout: data.Layout, max_used_batch: int = 32):
        if max_used_batch < 1 or max_used_batch & (max_used_batch - 1):
            raise ValueError(f"max_used_batch must be a power of two, not {max_used_batch}")
        self.num_queues = num_queues
        self.reorder_depth = reorder_depth
        self.width = width
        self.max_used_batch = max_used_batch
        super().__init__({
            "retire": In(stream.Signature(retire_layout)).array(num_queues),
            "config": In(data.ArrayLayout(VirtqConfig, num_queues)),
            "features": In(VirtqFeatures),
            "quiesce": In(1),
            "wr": Out(WriteChannelSignature(width)),
            "credit": Out(stream.Signature(unsigned(QUEUE_BITS), always_ready=True)),
            "idx_done": Out(stream.Signature(idx_done_layout, always_ready=True)),
            "stop": Out(num_queues),
            "error": Out(stream.Signature(VirtqError, always_ready=True)),
            "events": Out(data.StructLayout({
                "wr_used_elem": 1, "wr_used_idx": 1, "used_elems": 1, "buffers_used": 1})),
            "quiet": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nq = self.num_queues
        mb = self.max_used_batch
        epb = self.width // 64          # used elements per data beat
        in_order = self.features.in_order
        count_max = max(self.reorder_depth, mb)

        used_idx = Signal(data.ArrayLayout(16, nq))

        elem_layout = data.StructLayout({"id": 16, "len": 32})
        m.submodules.elems = elems = fifo.SyncFIFOBuffered(
            width=elem_layout.size, depth=2 * mb)
        batch_layout = data.StructLayout({
            "queue": unsigned(QUEUE_BITS),
            "multi": 1,                 # without IN_ORDER: ``count`` elements in ``elems``
            "slot": 16,
            "count": range(count_max + 1),
            "id": 16,
            "len": 32,
            "new_idx": 16,
        })
        m.submodules.batches = batches = fifo.SyncFIFOBuffered(
            width=batch_layout.size, depth=4)
        batch_in = data.View(batch_layout, batches.w_data)

        # --- collecting a turn --------------------------------------------------------------
        collecting = Signal()
        cq = Signal(range(max(nq, 2)))
        count = Signal(range(count_max + 1))
        slot0 = Signal(16)
        run_id = Signal(16)
        run_len = Signal(32)
        rr_last = Signal(range(max(nq, 2)))
        any_ready, pick = round_robin(m, Cat(r.valid for r in self.retire), rr_last,
                                      name="retire")
        with m.If(~collecting & any_ready & batches.w_rdy & ~self.quiesce):
            pick_cfg = self.config[pick]
            m.d.sync += [
                collecting.eq(1),
                cq.eq(pick),
                rr_last.eq(pick),
                count.eq(0),
                slot0.eq(used_idx[pick] & (pick_cfg.size - 1)),
            ]

        r_valid = Signal()
        r = Signal(self.retire[0].payload.shape())
        for i, port in enumerate(self.retire):
            with m.If(cq == i):
                m.d.comb += [r_valid.eq(port.valid), r.eq(port.payload)]
        cfg = self.config[cq]
        room = in_order | elems.w_rdy
        take = collecting & r_valid & room & ~self.quiesce
        for i, port in enumerate(self.retire):
            m.d.comb += port.ready.eq(take & (cq == i))
        count_next = count + 1
        close_taking = take & Mux(
            in_order,
            r.last | r.payload.partial | (count_next == count_max),
            r.last | (count_next == mb) | (slot0 + count_next == cfg.size))
        # A turn also ends if the reorder buffer stops offering (only after a flush) or the
        # element FIFO is full.
        close_idle = collecting & ~take & (count != 0)
        close = close_taking | close_idle
        closing_count = Mux(take, count_next, count)
        m.d.comb += [
            elems.w_en.eq(take & ~in_order),
            elems.w_data.eq(Cat(r.payload.id, r.payload.len)),
            self.credit.valid.eq(take),
            self.credit.payload.eq(cq),
            self.events.buffers_used.eq(take),
            self.events.used_elems.eq((take & ~in_order) | (close & in_order)),
        ]
        with m.If(take):
            m.d.sync += [count.eq(count_next), run_id.eq(r.payload.id),
                         run_len.eq(r.payload.len)]
        new_idx = Signal(16)
        m.d.comb += new_idx.eq(used_idx[cq] + closing_count)
        with m.If(close):
            m.d.comb += [
                batches.w_en.eq(1),
                batch_in.queue.eq(cq),
                batch_in.multi.eq(~in_order),
                batch_in.slot.eq(slot0),
                batch_in.count.eq(closing_count),
                batch_in.id.eq(Mux(take, r.payload.id, run_id)),
                batch_in.len.eq(Mux(take, r.payload.len, run_len)),
                batch_in.new_idx.eq(new_idx),
            ]
            m.d.sync += collecting.eq(0)
        with m.If(collecting & ~take & (count == 0) & ~r_valid):
            m.d.sync += collecting.eq(0)
        for q in range(nq):
            with m.If(close & (cq == q)):
                m.d.sync += used_idx[q].eq(new_idx)

        # --- issuing the two commands of a turn ---------------------------------------------
        job_layout = data.StructLayout({
            "kind": _Job,
            "count": range(count_max + 1),
            "value": 48,                # RUN: Cat(id, len); IDX: the new used->idx
        })
        m.submodules.jobs = jobs = fifo.SyncFIFOBuffered(width=job_layout.size, depth=8)
        job_in = data.View(job_layout, jobs.w_data)
        done_layout = data.StructLayout({
            "queue": unsigned(QUEUE_BITS), "is_idx": 1, "idx": 16})
        m.submodules.dones = dones = fifo.SyncFIFOBuffered(width=done_layout.size, depth=8)
        done_in = data.View(done_layout, dones.w_data)

        b = data.View(batch_layout, batches.r_data)
        b_cfg = self.config[b.queue]
        phase = Signal(2)               # 0: none, 1: used elements, 2: used->idx
        with m.If((phase == 0) & batches.r_rdy & ~self.quiesce):
            m.d.sync += phase.eq(1)
        cmd = self.wr.cmd
        job_room = jobs.w_rdy & dones.w_rdy
        m.d.comb += cmd.valid.eq((phase != 0) & job_room)
        with m.If(phase == 1):
            m.d.comb += [
                cmd.payload.addr.eq(b_cfg.device + USED_RING_OFFSET
                                    + b.slot * VIRTQ_USED_ELEM_BYTES),
                cmd.payload.len.eq(Mux(b.multi, b.count, 1) * VIRTQ_USED_ELEM_BYTES),
                job_in.kind.eq(Mux(b.multi, _Job.ELEMS, _Job.RUN)),
                job_in.count.eq(b.count),
                job_in.value.eq(Cat(b.id, b.len)),
                done_in.is_idx.eq(0),
            ]
        with m.Else():
            m.d.comb += [
                cmd.payload.addr.eq(b_cfg.device + USED_IDX_OFFSET),
                cmd.payload.len.eq(2),
                job_in.kind.eq(_Job.IDX),
                job_in.value.eq(b.new_idx),
                done_in.is_idx.eq(1),
            ]
        m.d.comb += [
            done_in.queue.eq(b.queue),
            done_in.idx.eq(b.new_idx),
        ]
        issued = cmd.valid & cmd.ready
        m.d.comb += [
            jobs.w_en.eq(issued),
            dones.w_en.eq(issued),
            batches.r_en.eq(issued & (phase == 2)),
            self.events.wr_used_elem.eq(issued & (phase == 1)),
            self.events.wr_used_idx.eq(issued & (phase == 2)),
        ]
        with m.If(issued):
            m.d.sync += phase.eq(Mux(phase == 1, 2, 0))

        # --- sending the data of issued commands --------------------------------------------
        job = data.View(job_layout, jobs.r_data)
        sent = Signal(range(count_max + 1))     # ELEMS: elements already in beats
        wdata = self.wr.data
        used_elem = Signal(64)          # struct virtq_used_elem: le32 id, le32 len (§2.7.8)
        m.d.comb += used_elem.eq(Cat(elems.r_data[:16], Const(0, 16), elems.r_data[16:48]))
        final = sent + 1 == job.count
        with m.If(jobs.r_rdy):
            with m.Switch(job.kind):
                with m.Case(_Job.RUN):
                    m.d.comb += [
                        wdata.valid.eq(1),
                        wdata.payload.data.eq(Cat(job.value[:16], Const(0, 16),
                                                  job.value[16:48])),
                        wdata.payload.last.eq(1),
                    ]
                with m.Case(_Job.IDX):
                    m.d.comb += [
                        wdata.valid.eq(1),
                        wdata.payload.data.eq(job.value[:16]),
                        wdata.payload.last.eq(1),
                    ]
                with m.Case(_Job.ELEMS):
                    # epb elements per beat, the lowest slot in the lowest lane.
                    acc = Signal(64 * max(epb - 1, 1))
                    acc_n = Signal(range(max(epb, 2)))
                    completes = (acc_n == epb - 1) | final
                    lanes = Signal(self.width)
                    for lane in range(epb):
                        part = lanes[64 * lane:64 * (lane + 1)]
                        held = acc[64 * lane:64 * (lane + 1)] if lane < epb - 1 else 0
                        m.d.comb += part.eq(Mux(acc_n == lane, used_elem,
                                                Mux(acc_n > lane, held, 0)))
                    with m.If(completes):
                        m.d.comb += [
                            wdata.valid.eq(elems.r_rdy),
                            wdata.payload.data.eq(lanes),
                            wdata.payload.last.eq(final),
                            elems.r_en.eq(wdata.ready),
                        ]
                        with m.If(wdata.valid & wdata.ready):
                            m.d.sync += [sent.eq(Mux(final, 0, sent + 1)), acc_n.eq(0)]
                    with m.Elif(elems.r_rdy):
                        m.d.comb += elems.r_en.eq(1)
                        for lane in range(epb - 1):
                            with m.If(acc_n == lane):
                                m.d.sync += acc[64 * lane:64 * (lane + 1)].eq(used_elem)
                        m.d.sync += [sent.eq(sent + 1), acc_n.eq(acc_n + 1)]
        m.d.comb += jobs.r_en.eq(wdata.valid & wdata.ready & wdata.payload.last)

        # --- done: tell the notifier, or stop the queue on a failed write ------------------
        fin = data.View(done_layout, dones.r_data)
        got = self.wr.done.valid & dones.r_rdy
        failed = got & (self.wr.done.payload.error.as_value() != 0)
        m.d.comb += [
            self.wr.done.ready.eq(dones.r_rdy),
            dones.r_en.eq(got),
            self.idx_done.valid.eq(got & fin.is_idx & ~failed),
            self.idx_done.payload.queue.eq(fin.queue),
            self.idx_done.payload.idx.eq(fin.idx),
            self.error.valid.eq(failed),
            self.error.payload.queue.eq(fin.queue),
            self.error.payload.kind.eq(VirtqErrorKind.DMA_WRITE_ERROR),
        ]
        stop = Signal(nq)
        for q in range(nq):
            m.d.comb += stop[q].eq(failed & (fin.queue == q))
        m.d.comb += [
            self.stop.eq(stop),
            self.quiet.eq((phase == 0) & (jobs.level == 0)),
        ]
        return m
