"""Decides used-buffer notifications after ``used->idx`` writes (virtio 1.2 §2.7.7.2)."""
from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import ReadChannelSignature
from hdl.virtio.round_robin import round_robin
from hdl.virtio.spec import AVAIL_FLAGS_OFFSET, AVAIL_RING_OFFSET, VIRTQ_AVAIL_ELEM_BYTES, \
    VirtqAvailFlags
from hdl.virtio.used_writer import idx_done_layout
from hdl.virtio.virtqueue_port import QUEUE_BITS, VirtqConfig, VirtqError, VirtqErrorKind, \
    VirtqFeatures

__all__ = ["UsedNotifier", "need_event"]


def need_event(event_idx, new_idx, old_idx):
    """``vring_need_event`` (virtio 1.2 §2.7.7.2, the spec's virtio_queue.h) in 16-bit
    arithmetic: ``event_idx`` is one of ``old_idx .. new_idx - 1``."""
    return ((new_idx - event_idx - 1)[:16]) < ((new_idx - old_idx)[:16])


class UsedNotifier(wiring.Component):
    """Reads the driver's suppression state after ``used->idx`` writes and raises notifications.

    For every queue it tracks the ``used->idx`` value last written (``done`` on the link) and
    the value up to which a decision was made. While they differ, it reads, on ``ring_rd``,
    ``used_event`` (with EVENT_IDX) or ``avail->flags`` (without) and decides for the whole
    range written since the last decision: with EVENT_IDX notify when
    ``vring_need_event(used_event, new, old)``, without it unless VIRTQ_AVAIL_F_NO_INTERRUPT
    is set. The read is issued only after the write's ``done``, so on the link it follows the
    write it decides about (a read request does not pass posted writes, PCIe Base §2.4.1);
    deciding once for several writes is the same as deciding after each of them with the
    value read after the last (``vring_need_event`` over adjacent ranges is their OR).

    Notifications wait per queue in a pending bit (several decisions for a queue before it is
    sent make one notification) and leave round robin on ``notify``.

    A failed read stops the queue (DMA_READ_ERROR) and notifies, which is always allowed
    (§2.7.7: drivers tolerate spurious notifications).

    Reset: every queue at ``used->idx`` 0 with nothing to decide or notify.

    Attributes
    ----------
    idx_done : In(stream.Signature(idx_done_layout, always_ready=True))
    config, features, quiesce : In
    ring_rd : Out(ReadChannelSignature(width))
    notify : Out(stream.Signature(QUEUE_BITS))
        A used-buffer notification for that queue; held until taken.
    stop, error : Out
    events : Out(StructLayout)
        Pulses ``rd_notify`` (a read issued) and ``notifications`` (one taken).
    quiet : Out(1)
        No read offered.
    """

    def __init__(self, *, num_queues: int, width: int = 64):
        self.num_queues = num_queues
        self.width = width
        super().__init__({
            "idx_done": In(stream.Signature(idx_done_layout, always_ready=True)),
            "config": In(data.ArrayLayout(VirtqConfig, num_queues)),
            "features": In(VirtqFeatures),
            "quiesce": In(1),
            "ring_rd": Out(ReadChannelSignature(width)),
            "notify": Out(stream.Signature(unsigned(QUEUE_BITS))),
            "stop": Out(num_queues),
            "error": Out(stream.Signature(VirtqError, always_ready=True)),
            "events": Out(data.StructLayout({"rd_notify": 1, "notifications": 1})),
            "quiet": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nq = self.num_queues
        written = Signal(data.ArrayLayout(16, nq))     # last used->idx written
        decided = Signal(data.ArrayLayout(16, nq))     # used->idx up to which we decided
        pending = Signal(nq)

        tag_layout = data.StructLayout({"queue": unsigned(QUEUE_BITS), "old": 16, "new": 16})
        m.submodules.tags = tags = fifo.SyncFIFOBuffered(width=tag_layout.size, depth=4)
        tag_in = data.View(tag_layout, tags.w_data)
        tag = data.View(tag_layout, tags.r_data)

        dirty = Signal(nq)
        for q in range(nq):
            m.d.comb += dirty[q].eq(written[q] != decided[q])
        rr_last = Signal(range(max(nq, 2)))
        any_dirty, sel = round_robin(m, dirty, rr_last, name="decide")
        cmd = self.ring_rd.cmd
        issue = any_dirty & ~cmd.valid & tags.w_rdy & ~self.quiesce
        sel_cfg = self.config[sel]
        rd_q = Signal(range(max(nq, 2)))
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += cmd.valid.eq(0)
        with m.If(issue):
            m.d.sync += [
                cmd.valid.eq(1),
                cmd.payload.addr.eq(sel_cfg.driver + Mux(
                    self.features.event_idx,
                    AVAIL_RING_OFFSET + sel_cfg.size * VIRTQ_AVAIL_ELEM_BYTES,  # used_event
                    AVAIL_FLAGS_OFFSET)),
                cmd.payload.len.eq(2),
                rr_last.eq(sel),
                rd_q.eq(sel),
            ]
        # The decision covers the used->idx writes done before the cycle the read is taken
        # (not merely offered), so which writes a read covers is visible on the DMA ports.
        accepted = cmd.valid & cmd.ready
        m.d.comb += [
            tags.w_en.eq(accepted),
            tag_in.queue.eq(rd_q),
            tag_in.old.eq(decided[rd_q]),
            tag_in.new.eq(written[rd_q]),
            self.events.rd_notify.eq(issue),
        ]

        rdata = self.ring_rd.data
        m.d.comb += rdata.ready.eq(tags.r_rdy)
        got = rdata.valid & rdata.ready
        m.d.comb += tags.r_en.eq(got & rdata.payload.last)
        value = rdata.payload.data[:16]
        failed = got & (rdata.payload.error.as_value() != 0)
        wanted = Signal()
        with m.If(self.features.event_idx):
            m.d.comb += wanted.eq(need_event(value, tag.new, tag.old))
        with m.Else():
            m.d.comb += wanted.eq((value & VirtqAvailFlags.NO_INTERRUPT) == 0)
        decide = got & (wanted | failed)

        # The notification output register.
        n_valid = Signal()
        n_queue = Signal(QUEUE_BITS)
        n_last = Signal(range(max(nq, 2)))
        any_pending, n_sel = round_robin(m, pending, n_last, name="notify")
        load = (~n_valid | self.notify.ready) & any_pending & ~self.quiesce
        with m.If(self.notify.valid & self.notify.ready):
            m.d.sync += n_valid.eq(0)
        with m.If(load):
            m.d.sync += [n_valid.eq(1), n_queue.eq(n_sel), n_last.eq(n_sel)]
        m.d.comb += [
            self.notify.valid.eq(n_valid),
            self.notify.payload.eq(n_queue),
            self.events.notifications.eq(self.notify.valid & self.notify.ready),
        ]

        idx = self.idx_done
        for q in range(nq):
            with m.If(idx.valid & (idx.payload.queue == q)):
                m.d.sync += written[q].eq(idx.payload.idx)
            with m.If(accepted & (rd_q == q)):
                m.d.sync += decided[q].eq(written[q])
            # A notification for the queue waiting in the output register, or loaded now,
            # goes out after this decision's used->idx write, so it covers this decision
            # too: no second one (§2.7.7.2 asks for one notification, not one per write).
            with m.If(decide & (tag.queue == q) & ~(n_valid & (n_queue == q))):
                m.d.sync += pending[q].eq(1)
            with m.If(load & (n_sel == q)):
                m.d.sync += pending[q].eq(0)

        stop = Signal(nq)
        for q in range(nq):
            m.d.comb += stop[q].eq(failed & (tag.queue == q))
        m.d.comb += [
            self.stop.eq(stop),
            self.error.valid.eq(failed),
            self.error.payload.queue.eq(tag.queue),
            self.error.payload.kind.eq(VirtqErrorKind.DMA_READ_ERROR),
            self.quiet.eq(~cmd.valid),
        ]
        return m
