"""Hands checked elements to the backend with a sequence number, and takes its completions."""
from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hdl.virtio.chain_walker import FULL_LEN_BITS, walk_beat_layout
from hdl.virtio.virtqueue_port import QUEUE_BITS, VirtqElemDesc, VirtqElemDone, VirtqError, \
    VirtqErrorKind

__all__ = ["ElementDispatcher", "used_payload_layout"]

used_payload_layout = data.StructLayout({
    "id": unsigned(16),         # the element's head: the used element's id (§2.7.8)
    "len": unsigned(32),        # bytes the backend wrote: the used element's len
    "partial": unsigned(1),     # len is less than the element's device-writable length
})
"""What a completion carries through the reorder buffer to the used-ring writer."""

_stored_desc = data.StructLayout({"addr": 64, "len": 32, "write": 1})


class ElementDispatcher(wiring.Component):
    """The backend port: elements out with a seq, completions in (any order).

    The walker's beats are stored in a buffer of ``buffer_depth`` descriptors as they come;
    an element becomes visible only when the walker commits it, and a dropped (aborted)
    element is erased by moving the write pointer back. Committed elements leave in order:
    each takes a seq from its queue's reorder buffer (``alloc``), its total device-writable
    length is remembered under ``(queue, seq)``, and its descriptors go out on ``elem``, one
    per clock.

    A completion on ``done`` looks up that length: a ``written_len`` below it marks the
    completion *partial*, which ends an IN_ORDER run in the used-ring writer (§2.7.9, see
    ``docs/robustness.md``). It then goes to its queue's reorder buffer (``complete``).

    Reset: nothing buffered, nothing being handed out (under ``quiesce`` the element in
    progress is finished first, so a backend never sees half of one).

    Parameters
    ----------
    num_queues, reorder_depth : int
        As the engine's.
    buffer_depth : int
        Descriptors buffered (power of two); at least the longest chain.

    Attributes
    ----------
    walk : In(stream.Signature(walk_beat_layout))
    elem : Out(stream.Signature(VirtqElemDesc(seq_width)))
    done : In(stream.Signature(VirtqElemDone(seq_width)))
        Always ready.
    alloc : In(stream.Signature(seq_width)).array(num_queues)
        The reorder buffers' seq allocation.
    complete : Out(stream.Signature(complete_layout)).array(num_queues)
        Towards the reorder buffers (which are always ready).
    quiesce : In(1)
        Start no new element (the current one is finished).
    error : Out(stream.Signature(VirtqError, always_ready=True))
        A completion for a queue that does not exist (BAD_COMPLETION).
    events : Out(StructLayout)
        ``elements``: pulse per element handed out.
    quiet : Out(1)
        Not in the middle of an element on ``elem``.
    """

    def __init__(self, *, num_queues: int, reorder_depth: int, buffer_depth: int):
        if buffer_depth < 2 or buffer_depth & (buffer_depth - 1):
            raise ValueError(f"buffer_depth must be a power of two of at least 2, "
                             f"not {buffer_depth}")
        self.num_queues = num_queues
        self.reorder_depth = reorder_depth
        self.buffer_depth = buffer_depth
        self.seq_width = exact_log2(reorder_depth) + 1
        self.complete_layout = data.StructLayout({
            "seq": unsigned(self.seq_width),
            "payload": used_payload_layout,
        })
        super().__init__({
            "walk": In(stream.Signature(walk_beat_layout)),
            "elem": Out(stream.Signature(VirtqElemDesc(self.seq_width))),
            "done": In(stream.Signature(VirtqElemDone(self.seq_width))),
            "alloc": In(stream.Signature(unsigned(self.seq_width))).array(num_queues),
            "complete": Out(stream.Signature(self.complete_layout)).array(num_queues),
            "quiesce": In(1),
            "error": Out(stream.Signature(VirtqError, always_ready=True)),
            "events": Out(data.StructLayout({"elements": 1})),
            "quiet": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nq = self.num_queues
        bd = self.buffer_depth
        bbits = exact_log2(bd)
        slot_bits = exact_log2(self.reorder_depth)
        qbits = ceil_log2(nq)

        # --- descriptor buffer with commit / rollback --------------------------------------
        m.submodules.buf = buf = Memory(shape=_stored_desc, depth=bd, init=[])
        buf_w = buf.write_port()
        buf_r = buf.read_port()
        wp = Signal(bbits + 1)          # tentative write pointer
        cwp = Signal(bbits + 1)         # end of the committed elements
        rp = Signal(bbits + 1)          # next descriptor to hand out

        commit_layout = data.StructLayout({
            "queue": unsigned(QUEUE_BITS),
            "head": unsigned(16),
            "ndesc": range(bd + 1),
            "writable_len": FULL_LEN_BITS,
        })
        m.submodules.commits = commits = fifo.SyncFIFOBuffered(
            width=commit_layout.size, depth=min(bd, 32))
        commit_in = data.View(commit_layout, commits.w_data)

        beat = self.walk.payload
        used = Signal(bbits + 1)
        m.d.comb += used.eq(wp - rp)
        room = used != bd
        m.d.comb += self.walk.ready.eq((~beat.desc | room) & (~beat.end | commits.w_rdy))
        take = self.walk.valid & self.walk.ready
        wp_after = Signal(bbits + 1)
        m.d.comb += [
            wp_after.eq(wp + beat.desc),
            buf_w.addr.eq(wp[:bbits]),
            buf_w.data.addr.eq(beat.addr),
            buf_w.data.len.eq(beat.len),
            buf_w.data.write.eq(beat.write),
            buf_w.en.eq(take & beat.desc),
            commit_in.queue.eq(beat.queue),
            commit_in.head.eq(beat.head),
            commit_in.ndesc.eq(wp_after - cwp),
            commit_in.writable_len.eq(beat.writable_len),
            commits.w_en.eq(take & beat.end & ~beat.abort),
        ]
        with m.If(take):
            with m.If(beat.end & beat.abort):
                m.d.sync += wp.eq(cwp)
            with m.Elif(beat.end):
                m.d.sync += [wp.eq(wp_after), cwp.eq(wp_after)]
            with m.Else():
                m.d.sync += wp.eq(wp_after)

        # --- handing out: seq from the reorder buffer, one descriptor per clock ------------
        m.submodules.wlen = wlen = Memory(shape=FULL_LEN_BITS,
                                          depth=(1 << qbits) << slot_bits, init=[])
        wlen_w = wlen.write_port()
        wlen_r = wlen.read_port()

        rec = data.View(commit_layout, commits.r_data)
        left = Signal(range(bd + 1))    # descriptors of the current element not yet read
        o_valid = Signal()
        o_meta = Signal(data.StructLayout({
            "queue": unsigned(QUEUE_BITS), "seq": unsigned(self.seq_width),
            "head": unsigned(16), "last": 1}))
        advance = ~o_valid | self.elem.ready
        alloc_valid = Signal()
        alloc_seq = Signal(self.seq_width)
        for i, port in enumerate(self.alloc):
            with m.If(rec.queue == i):
                m.d.comb += [alloc_valid.eq(port.valid), alloc_seq.eq(port.payload)]
        starting = Signal()
        m.d.comb += starting.eq((left == 0) & advance & commits.r_rdy & alloc_valid
                                & ~self.quiesce)
        for i, port in enumerate(self.alloc):
            m.d.comb += port.ready.eq(starting & (rec.queue == i))
        reading = starting | (advance & (left != 0))
        m.d.comb += [
            commits.r_en.eq(starting),
            buf_r.addr.eq(rp[:bbits]),
            buf_r.en.eq(advance),
            wlen_w.addr.eq(Cat(alloc_seq[:slot_bits], rec.queue[:qbits])),
            wlen_w.data.eq(rec.writable_len),
            wlen_w.en.eq(starting),
            self.events.elements.eq(starting),
        ]
        with m.If(advance):
            m.d.sync += o_valid.eq(reading)
        with m.If(reading):
            m.d.sync += rp.eq(rp + 1)
        with m.If(starting):
            m.d.sync += [
                left.eq(rec.ndesc - 1),
                o_meta.queue.eq(rec.queue),
                o_meta.seq.eq(alloc_seq),
                o_meta.head.eq(rec.head),
                o_meta.last.eq(rec.ndesc == 1),
            ]
        with m.Elif(reading):
            m.d.sync += [left.eq(left - 1), o_meta.last.eq(left == 1)]
        out = self.elem.payload
        m.d.comb += [
            self.elem.valid.eq(o_valid),
            out.queue.eq(o_meta.queue),
            out.seq.eq(o_meta.seq),
            out.head.eq(o_meta.head),
            out.addr.eq(buf_r.data.addr),
            out.len.eq(buf_r.data.len),
            out.write.eq(buf_r.data.write),
            out.last.eq(o_meta.last),
            self.quiet.eq((left == 0) & ~o_valid),
        ]

        # --- completions: look the writable length up, then to the reorder buffer ---------
        done = self.done.payload
        d1_valid = Signal()
        d1 = Signal(VirtqElemDone(self.seq_width))
        m.d.comb += [
            self.done.ready.eq(1),
            wlen_r.addr.eq(Cat(done.seq[:slot_bits], done.queue[:qbits])),
        ]
        m.d.sync += [d1_valid.eq(self.done.valid), d1.eq(done)]
        known = d1.queue < nq
        for i, port in enumerate(self.complete):
            m.d.comb += [
                port.valid.eq(d1_valid & (d1.queue == i)),
                port.payload.seq.eq(d1.seq),
                port.payload.payload.id.eq(d1.head),
                port.payload.payload.len.eq(d1.written_len),
                port.payload.payload.partial.eq(wlen_r.data != d1.written_len),
            ]
        m.d.comb += [
            self.error.valid.eq(d1_valid & ~known),
            self.error.payload.queue.eq(d1.queue),
            self.error.payload.kind.eq(VirtqErrorKind.BAD_COMPLETION),
        ]
        return m
