"""The in-order completion reorder buffer (``VIRTIO_F_IN_ORDER``, virtio 1.2 §2.7.9).

With ``VIRTIO_F_IN_ORDER`` (feature bit 35, virtio 1.2 §6) the device uses buffers in the order
the driver made them available, so it may return a whole batch as one used-ring element (the
id of the batch's last buffer) plus one ``used->idx`` update. A storage backend finishes
requests in any order; this block puts them back in order. It is the hardware form of the
software design: every element gets a sequence number when it is popped from the available
ring, early completions wait keyed by that number, and the buffer drains while the next
expected number is present. See ``docs/reorder-buffer.md`` for the timing and the proofs.
"""
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = ["used_elem_layout", "ReorderBuffer", "MIN_DEPTH", "MAX_DEPTH", "MAX_RUN"]

MIN_DEPTH = 2
MAX_DEPTH = 4096
MAX_RUN = 32768
"""Longest run a retire stream may mark: a used-ring batch cannot be longer than the largest
Queue Size (virtio 1.2 §2.7: at most 32768)."""

used_elem_layout = data.StructLayout({
    "id": unsigned(16),
    "len": unsigned(32),
})
"""Default payload: a ``virtq_used_elem`` (virtio 1.2 §2.7.8) with ``id`` narrowed to 16 bits,
which holds every descriptor index since Queue Size is at most 32768."""


class ReorderBuffer(wiring.Component):
    """Retires completions in allocation order, one per clock.

    Every element popped from the available ring takes a sequence number from ``alloc``. The
    backend returns ``(seq, payload)`` on ``complete`` in any order; ``retire`` gives them back
    strictly in ``seq`` order (or, in bypass mode, in arrival order), each with a run marker.

    Sequence numbers are ``seq_width = log2(depth) + 1`` bits wide and count modulo
    ``2 * depth``: one bit more than the slot index, which is the least that lets the buffer
    tell "in flight" from "not in flight" for every value (at most ``depth`` of the ``2 * depth``
    values are in flight at once). A completion is stored in slot ``seq mod depth`` of a block
    RAM; a one-bit "lap" memory (the top bit of the seq last stored in each slot) tells whether
    a slot holds the completion of the seq that currently maps to it, so no valid bits are ever
    cleared and nothing compares against all slots.

    Parameters
    ----------
    depth : int
        N, the most elements in flight (allocated and not yet retired): a power of two from
        2 to 4096. Default 256.
    payload_layout : data.Layout
        What a completion carries besides its seq, returned unchanged on ``retire``. Default
        :data:`used_elem_layout` (16-bit descriptor ``id``, 32-bit written ``len``).
    max_run : int or None
        The longest run the run marker may form, 1 to 32768 (1: every retire ends a run).
        Default (``None``): ``depth``.

    Attributes
    ----------
    alloc : Out(stream.Signature(unsigned(seq_width)))
        Hands out 0, 1, 2, ... (wrapping modulo ``2 * depth`` forever) while fewer than
        ``depth`` elements are in flight and the buffer is not busy. ``valid`` only depends on
        registers; once raised it stays up until taken (or a flush).
    complete : In(stream.Signature(complete_layout))
        ``seq`` and ``payload`` of a finished element, in any order. Always ready: a completion
        is never back-pressured. A seq that is not in flight (never allocated, or already
        retired) or that was completed already is an error: it raises ``error`` and is dropped
        (never retired, and the first completion of that seq is kept). Completions that
        arrive while ``busy`` are discarded silently.
    retire : Out(stream.Signature(retire_layout))
        ``seq``, ``payload`` and ``last`` of each element, in allocation order (bypass: in
        completion arrival order). Registered; payload stable while not taken. A completion
        accepted in cycle t for the next element to retire is offered in cycle t + 2; while
        completions are present it sustains one element per clock. ``last`` is 0 exactly when
        the completion of the next element (in retire order) had been accepted at least two
        cycles before this element was first offered *and* this element is not the
        ``max_run``-th of its run; a run is a maximal sequence of elements with ``last == 0``
        closed by one with ``last == 1``. So ``last == 0`` promises the next element will
        follow without waiting for the backend.
    bypass : In(1)
        VIRTIO_F_IN_ORDER not negotiated: completions retire in arrival order through the same
        ports (alloc and the error checks work the same). Sampled only while the buffer is
        idle (nothing allocated and not retired); set it before the first allocation.
        In bypass mode a seq also counts against the credit until it and every older seq
        have completed, since its slot is reused ``depth`` seqs later.
    flush : In(1)
        Device reset. Transfers in the cycle it is asserted still happen; at the end of that
        cycle everything in flight is discarded, ``error`` clears, numbering restarts at 0 and
        the buffer is ``busy`` for ``depth`` cycles while it clears the lap memory.
    busy : Out(1)
        A flush (or the reset after power-up or ``rst``) is in progress: no allocation, no
        retire. Falls ``depth`` cycles after the flush (or reset) was taken.
    error : Out(1)
        Sticky: a bad completion was seen since the last flush or reset. Set two cycles after
        the bad completion was accepted.
    error_seq : Out(seq_width)
        The seq of the first bad completion (valid while ``error``).
    seq_width : int
        Width of every sequence number.
    """

    def __init__(self, *, depth: int = 256, payload_layout: data.Layout = used_elem_layout,
                 max_run: int | None = None):
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise TypeError(f"depth must be an integer, not {depth!r}")
        if depth < MIN_DEPTH or depth > MAX_DEPTH or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two from {MIN_DEPTH} to {MAX_DEPTH}, "
                             f"not {depth}")
        try:
            payload_layout = data.Layout.cast(payload_layout)
        except TypeError:
            raise TypeError(f"payload_layout must be a data layout such as data.StructLayout, "
                            f"not {payload_layout!r}") from None
        if payload_layout.size == 0:
            raise ValueError("payload_layout must be at least 1 bit wide")
        if max_run is None:
            max_run = depth
        if not isinstance(max_run, int) or isinstance(max_run, bool):
            raise TypeError(f"max_run must be an integer or None, not {max_run!r}")
        if max_run < 1 or max_run > MAX_RUN:
            raise ValueError(f"max_run must be from 1 to {MAX_RUN} (the largest Queue Size, "
                             f"virtio 1.2 §2.7), not {max_run}")

        self.depth = depth
        self.payload_layout = payload_layout
        self.max_run = max_run
        self.seq_width = exact_log2(depth) + 1
        self.complete_layout = data.StructLayout({
            "seq": unsigned(self.seq_width),
            "payload": payload_layout,
        })
        self.retire_layout = data.StructLayout({
            "seq": unsigned(self.seq_width),
            "payload": payload_layout,
            "last": unsigned(1),
        })
        super().__init__({
            "alloc": Out(stream.Signature(unsigned(self.seq_width))),
            "complete": In(stream.Signature(self.complete_layout)),
            "retire": Out(stream.Signature(self.retire_layout)),
            "bypass": In(1),
            "flush": In(1),
            "busy": Out(1),
            "error": Out(1),
            "error_seq": Out(self.seq_width),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.depth
        aw = exact_log2(n)              # slot index bits
        sw = self.seq_width             # aw + 1: the top bit is the lap of a seq

        def seq_const(value):
            return (value % (1 << sw))

        # --- storage ------------------------------------------------------------------------
        # Slot seq mod N holds (seq, payload); the seq is needed in bypass mode, where slots
        # are used as a FIFO in arrival order, and costs no block RAM for the default payload
        # (48 + 9 bits fit two 512x36 blocks).
        entry = data.StructLayout({"seq": unsigned(sw), "payload": self.payload_layout})
        m.submodules.store = store = Memory(shape=entry, depth=n, init=[])
        st_w = store.write_port()
        st_r = store.read_port()

        # lap[i] is the top bit of the seq last completed into slot i. Seq s is completed and
        # waiting iff lap[s mod N] == s[aw]: the slot's previous user, s - N, wrote the other
        # value, so retiring never has to clear anything. A flush (or reset) sets every lap
        # bit to 1, which marks seqs 0..N-1 as not completed.
        m.submodules.lap = lap = Memory(shape=1, depth=n, init=[])
        lap_w = lap.write_port()
        lap_in = lap.read_port(domain="comb")   # the seq on the complete port

        # --- state --------------------------------------------------------------------------
        flushing = Signal(init=1)       # also after reset: memories have no reset
        scrub = Signal(aw)
        alloc_ptr = Signal(sw)          # next seq to hand out
        in_flight = Signal(range(n + 1))    # allocated, not retired
        window = Signal(range(n + 1))       # alloc_ptr - head
        # head: next seq to leave storage (bypass: next seq to walk past once completed).
        # head_p<k> == head + k, kept in registers so no adder sits in the hot path.
        head = Signal(sw)
        head_p1 = Signal(sw, init=1)
        head_p2 = Signal(sw, init=seq_const(2))
        head_p3 = Signal(sw, init=seq_const(3))
        v0 = Signal()                   # head is completed
        v1 = Signal()                   # head + 1 is completed
        fifo_wr = Signal(sw)            # bypass: arrivals written to storage
        fifo_rd = Signal(sw)            # bypass: arrivals read from storage
        mode_bypass = Signal()

        c1_valid = Signal()             # stage C1: the registered completion
        c1 = Signal(self.complete_layout)
        c1_ok = Signal()                # ... in flight and not completed before
        c1_at = Signal(4)               # ... c1.seq == head + k, for k = 0..3

        d_valid = Signal()              # stage D: an entry read from storage (or forwarded)
        d_fwd = Signal()                # ... taken from C1 rather than from storage
        d_copy = Signal(entry)
        o0_valid = Signal()             # output register, drives retire
        o0 = Signal(self.retire_layout)
        o1_valid = Signal()             # skid entry behind o0
        o1 = Signal(entry)
        run_pos = Signal(range(self.max_run + 1), init=1)  # run position of the next o0

        err = Signal()
        err_seq = Signal(sw)

        # --- decisions of this cycle (all from registers) -----------------------------------
        pop = o0_valid & self.retire.ready
        # D + o0 + o1 hold at most three entries; issuing into D or skipping into o0/o1 is
        # decided from registers alone, retire.ready only moves entries along.
        can_issue = ~(d_valid & o1_valid)
        can_skip = ~d_valid & ~o1_valid

        wr = Signal(4)                  # C1 completes head + k at the end of this cycle
        m.d.comb += wr.eq(Mux(c1_ok, c1_at, 0))
        ready_h0 = v0 | wr[0]
        fifo_ne = fifo_wr != fifo_rd

        skip = Signal()                 # C1 goes straight to o0/o1
        issue = Signal()                # an entry enters D
        issue_fwd = Signal()            # ... and it is C1's (no storage read)
        rd_addr = Signal(aw)
        step = Signal(2)                # how far head moves
        nxt_at_f = Signal()             # the element after the last one issued is ready
        skip_next = Signal()            # the element after a skipped one is ready
        with m.If(mode_bypass):
            m.d.comb += [
                skip.eq(c1_ok & ~fifo_ne & can_skip),
                issue.eq(~skip & (fifo_ne | c1_ok) & can_issue),
                issue_fwd.eq(~skip & ~fifo_ne & c1_ok & can_issue),
                rd_addr.eq(fifo_rd[:aw]),
                step.eq(ready_h0),      # walk past completed seqs, silently
                nxt_at_f.eq(fifo_ne | c1_ok),
                skip_next.eq(0),
            ]
        with m.Else():
            m.d.comb += [
                skip.eq(wr[0] & can_skip),
                issue.eq(Mux(skip, v1, ready_h0 & can_issue)),
                issue_fwd.eq(~skip & wr[0] & can_issue),
                rd_addr.eq(Mux(skip, head_p1, head)[:aw]),
                step.eq(skip + issue),
                nxt_at_f.eq(ready_h0),
                skip_next.eq(v1),
            ]

        # --- storage ports ------------------------------------------------------------------
        m.d.comb += [
            st_w.addr.eq(Mux(mode_bypass, fifo_wr[:aw], c1.seq[:aw])),
            st_w.data.seq.eq(c1.seq),
            st_w.data.payload.eq(c1.payload),
            st_w.en.eq(c1_ok),
            st_r.addr.eq(rd_addr),
            st_r.en.eq(issue & ~issue_fwd),
        ]
        with m.If(flushing):
            m.d.comb += [
                lap_w.addr.eq(scrub),
                lap_w.data.eq(1),
                lap_w.en.eq(1),
            ]
        with m.Else():
            m.d.comb += [
                lap_w.addr.eq(c1.seq[:aw]),
                lap_w.data.eq(c1.seq[aw]),
                lap_w.en.eq(c1_ok),
            ]

        # --- head and its look-ahead --------------------------------------------------------
        # Completion state of head + k as of the next cycle. The lap bit of head + k is only
        # meaningful for k < N (its slot's previous user, head + k - N, is then behind head);
        # head + N and beyond are never allocated, since window <= N.
        done_next = [v0 | wr[0], v1 | wr[1]]
        for k, head_pk in ((2, head_p2), (3, head_p3)):
            if k < n:
                lap_pk = lap.read_port(domain="comb")
                m.d.comb += lap_pk.addr.eq(head_pk[:aw])
                done_next.append((lap_pk.data == head_pk[aw]) | wr[k])
            else:
                done_next.append(0)
        with m.Switch(step):
            with m.Case(1):
                m.d.sync += [head.eq(head_p1), head_p1.eq(head_p2), head_p2.eq(head_p3),
                             head_p3.eq(head_p3 + 1)]
                m.d.sync += [v0.eq(done_next[1]), v1.eq(done_next[2])]
            with m.Case(2):
                m.d.sync += [head.eq(head_p2), head_p1.eq(head_p3), head_p2.eq(head_p3 + 1),
                             head_p3.eq(head_p3 + 2)]
                m.d.sync += [v0.eq(done_next[2]), v1.eq(done_next[3])]
            with m.Default():
                m.d.sync += [v0.eq(done_next[0]), v1.eq(done_next[1])]

        # --- D and the output registers -----------------------------------------------------
        d_entry = Mux(d_fwd, d_copy.as_value(), st_r.data.as_value())
        d_move = d_valid & (~o1_valid | pop)
        push = d_move | skip
        push_entry = Signal(entry)
        m.d.comb += push_entry.eq(Mux(skip, Cat(c1.seq, c1.payload.as_value()), d_entry))

        land_from_o1 = pop & o1_valid
        land_push = push & (~o0_valid | (pop & ~o1_valid))
        next_ready = Signal()
        with m.If(land_from_o1):
            m.d.comb += next_ready.eq(d_valid | nxt_at_f)
        with m.Elif(skip):
            m.d.comb += next_ready.eq(skip_next)
        with m.Else():
            m.d.comb += next_ready.eq(nxt_at_f)
        land_last = ~(next_ready & (run_pos < self.max_run))

        with m.If(land_from_o1 | land_push):
            m.d.sync += [
                o0.seq.eq(Mux(land_from_o1, o1.seq, push_entry.seq)),
                o0.payload.eq(Mux(land_from_o1, o1.payload.as_value(),
                                  push_entry.payload.as_value())),
                o0.last.eq(land_last),
                run_pos.eq(Mux(land_last, 1, run_pos + 1)),
            ]
        with m.If(push & ~land_push):
            m.d.sync += o1.eq(push_entry)
        with m.If(issue_fwd):
            m.d.sync += d_copy.eq(Cat(c1.seq, c1.payload.as_value()))
        with m.If(issue):
            m.d.sync += d_fwd.eq(issue_fwd)
        m.d.sync += [
            o0_valid.eq((o0_valid & ~pop) | land_from_o1 | land_push),
            o1_valid.eq((o1_valid & ~pop) | (push & ~land_push)),
            d_valid.eq((d_valid & ~d_move) | issue),
        ]

        # --- bypass FIFO pointers -----------------------------------------------------------
        with m.If(mode_bypass):
            m.d.sync += [
                fifo_rd.eq(fifo_rd + (issue & ~issue_fwd)),
                fifo_wr.eq(fifo_wr + (c1_ok & ~skip & ~issue_fwd)),
            ]

        # --- allocation and credit ----------------------------------------------------------
        # in_flight and window never exceed N, so their top bit set means "equal to N".
        alloc_take = self.alloc.valid & self.alloc.ready
        m.d.comb += [
            self.alloc.valid.eq(~flushing & ~in_flight[aw] & ~window[aw]),
            self.alloc.payload.eq(alloc_ptr),
        ]
        m.d.sync += [
            alloc_ptr.eq(alloc_ptr + alloc_take),
            in_flight.eq(in_flight + alloc_take - pop),
            window.eq(window + alloc_take - step),
        ]
        with m.If((in_flight == 0) & (window == 0)):
            m.d.sync += mode_bypass.eq(self.bypass)

        # --- completion input: checks precomputed against the state of the next cycle -------
        # A seq that is not completed cannot be passed by head, so "in flight next cycle" is
        # "between head and alloc_ptr now, or the seq allocated now"; "completed next cycle"
        # is "lap says so now, or C1 completes it now".
        in_seq = self.complete.payload.seq
        in_off = Signal(sw)
        m.d.comb += [
            in_off.eq(in_seq - head),
            lap_in.addr.eq(in_seq[:aw]),
        ]
        in_window = (in_off < window) | ((in_off == window) & alloc_take)
        in_done = (lap_in.data == in_seq[aw]) | (c1_ok & (c1.seq == in_seq))
        at_next = Signal(4)
        with m.Switch(step):
            for s in range(3):
                with m.Case(s):
                    m.d.comb += at_next.eq(Cat(in_off == seq_const(s + k) for k in range(4)))
        m.d.comb += self.complete.ready.eq(1)
        m.d.sync += [
            c1_valid.eq(self.complete.valid & ~flushing),
            c1_ok.eq(self.complete.valid & ~flushing & in_window & ~in_done),
            c1_at.eq(at_next),
            c1.eq(self.complete.payload),
        ]
        with m.If(c1_valid & ~c1_ok & ~err):
            m.d.sync += [err.eq(1), err_seq.eq(c1.seq)]

        m.d.comb += [
            self.retire.valid.eq(o0_valid),
            self.retire.payload.eq(o0),
            self.busy.eq(flushing),
            self.error.eq(err),
            self.error_seq.eq(err_seq),
        ]

        # --- flush --------------------------------------------------------------------------
        with m.If(flushing):
            m.d.sync += [scrub.eq(scrub + 1), v0.eq(0), v1.eq(0)]
            with m.If(scrub == n - 1):
                m.d.sync += flushing.eq(0)
        with m.If(self.flush):
            m.d.sync += [
                flushing.eq(1),
                scrub.eq(0),
                alloc_ptr.eq(0),
                in_flight.eq(0),
                window.eq(0),
                head.eq(0),
                head_p1.eq(1),
                head_p2.eq(seq_const(2)),
                head_p3.eq(seq_const(3)),
                v0.eq(0),
                v1.eq(0),
                fifo_wr.eq(0),
                fifo_rd.eq(0),
                c1_valid.eq(0),
                c1_ok.eq(0),
                d_valid.eq(0),
                o0_valid.eq(0),
                o1_valid.eq(0),
                run_pos.eq(1),
                err.eq(0),
            ]
        return m
