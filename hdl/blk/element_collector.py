"""Takes the virtqueue engine's element beats and files each request under a slot."""
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.blk.layouts import LEN_BITS, LEN_SATURATED, desc_layout, request_layout, \
    slot_meta_layout
from hdl.virtio.virtqueue_port import VirtqElemDesc

__all__ = ["ElementCollector"]


class ElementCollector(wiring.Component):
    """Gives every element a free request slot and records what the rest of the engine needs.

    It takes one descriptor beat per clock. The first beat of an element waits for a free
    slot (a slot is busy from then until ``release`` names it). Non-empty descriptors are
    written to the descriptor memory at ``slot * max_descriptors + k`` in chain order, so a
    slot's readable descriptors are ``0 .. n_r - 1`` and its writable ones follow (the
    engine hands readable descriptors first, virtio 1.2 §2.7.4.2); zero-length ones carry no
    byte and are dropped. Beyond ``max_descriptors`` non-empty descriptors nothing more is
    stored and the request is marked ``too_many``; the totals and the status byte's address
    (the last byte of the last non-empty writable descriptor) are kept up to date for every
    beat regardless.

    After an element's last beat it spends one clock writing the slot's
    :func:`~hdl.blk.layouts.slot_meta_layout` entry and handing a
    :func:`~hdl.blk.layouts.request_layout` record to the front end (which has room for
    one per slot).

    Reset: ``rst`` frees every slot. Under ``reset`` (device reset) every beat is taken and
    dropped and no slot is allocated; the engine's soft reset then clears it.

    Parameters
    ----------
    seq_width : int
        The virtqueue engine's ``seq_width``.
    slots : int
        Request slots (a power of two).
    max_descriptors : int
        Non-empty descriptors stored per request (a power of two).

    Attributes
    ----------
    elem : In(stream.Signature(VirtqElemDesc(seq_width)))
    desc_wr : In(WritePort.Signature(...))
        Write port of the descriptor memory (``desc_layout``).
    meta_wr : In(WritePort.Signature(...))
        Write port of the slot memory (``slot_meta_layout``).
    request : Out(stream.Signature(request_layout(...)))
    alloc : Out(stream.Signature(slot))
        A slot was taken (valid for one clock; the receiver is always ready).
    release : In(stream.Signature(slot))
        A slot is free again (always ready).
    reset : In(1)
    """

    def __init__(self, *, seq_width: int, slots: int, max_descriptors: int):
        self.seq_width = seq_width
        self.slots = slots
        self.max_descriptors = max_descriptors
        self.slot_bits = exact_log2(slots)
        self.desc_bits = exact_log2(max_descriptors)
        super().__init__({
            "elem": In(stream.Signature(VirtqElemDesc(seq_width))),
            "desc_wr": In(WritePort.Signature(addr_width=self.slot_bits + self.desc_bits,
                                              shape=desc_layout)),
            "meta_wr": In(WritePort.Signature(addr_width=self.slot_bits,
                                              shape=slot_meta_layout(seq_width,
                                                                     max_descriptors))),
            "request": Out(stream.Signature(request_layout(self.slot_bits, max_descriptors))),
            "alloc": Out(stream.Signature(unsigned(self.slot_bits))),
            "release": In(stream.Signature(unsigned(self.slot_bits))),
            "reset": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        d_max = self.max_descriptors

        busy = Signal(self.slots)
        free_slot = Signal(self.slot_bits)
        has_free = Signal()
        for i in reversed(range(self.slots)):
            with m.If(~busy[i]):
                m.d.comb += [free_slot.eq(i), has_free.eq(1)]

        in_elem = Signal()          # beats of an element have been taken, not its last
        finishing = Signal()        # its last beat was taken: write the records
        slot = Signal(self.slot_bits)
        idx = Signal(range(d_max + 1))
        n_r = Signal(range(d_max + 1))
        r_len = Signal(LEN_BITS)
        w_len = Signal(LEN_BITS)
        status_addr = Signal(64)
        too_many = Signal()
        queue = Signal(4)
        seq = Signal(self.seq_width)
        head = Signal(16)

        elem = self.elem
        p = elem.payload
        m.d.comb += elem.ready.eq(self.reset | (~finishing & (in_elem | has_free)))
        take = elem.valid & elem.ready & ~self.reset

        # The element's running values, as they are before this beat.
        cur_slot = Mux(in_elem, slot, free_slot)
        cur_idx = Mux(in_elem, idx, 0)
        cur_r = Mux(in_elem, r_len, 0)
        cur_w = Mux(in_elem, w_len, 0)
        cur_n_r = Mux(in_elem, n_r, 0)
        cur_too_many = in_elem & too_many

        nonempty = p.len != 0
        store = Signal()
        m.d.comb += store.eq(take & nonempty & (cur_idx < d_max))
        m.d.comb += [
            self.desc_wr.addr.eq(Cat(cur_idx[:self.desc_bits], cur_slot)),
            self.desc_wr.data.addr.eq(p.addr),
            self.desc_wr.data.len.eq(p.len),
            self.desc_wr.en.eq(store),
        ]

        def saturating(total, length):
            s = Signal(LEN_BITS + 1)
            m.d.comb += s.eq(total + length)
            return Mux(s >= LEN_SATURATED, LEN_SATURATED, s)

        with m.If(take):
            m.d.sync += [
                slot.eq(cur_slot),
                queue.eq(p.queue),
                seq.eq(p.seq),
                head.eq(p.head),
                idx.eq(cur_idx + store),
                too_many.eq(cur_too_many | (nonempty & (cur_idx == d_max))),
                in_elem.eq(~p.last),
                finishing.eq(p.last),
            ]
            with m.If(p.write):
                m.d.sync += [w_len.eq(saturating(cur_w, p.len)), r_len.eq(cur_r),
                             n_r.eq(cur_n_r)]
                with m.If(nonempty):
                    m.d.sync += status_addr.eq(p.addr + p.len - 1)
            with m.Else():
                m.d.sync += [r_len.eq(saturating(cur_r, p.len)), w_len.eq(cur_w),
                             n_r.eq(Mux(store, cur_idx + 1, cur_n_r))]
            with m.If(~in_elem):
                m.d.comb += [self.alloc.valid.eq(1), self.alloc.payload.eq(cur_slot)]
                m.d.sync += busy.bit_select(cur_slot, 1).eq(1)

        req = self.request
        m.d.comb += [
            req.valid.eq(finishing),
            req.payload.slot.eq(slot),
            req.payload.r_len.eq(r_len),
            req.payload.w_len.eq(w_len),
            req.payload.n_r.eq(n_r),
            req.payload.too_many.eq(too_many),
            self.meta_wr.addr.eq(slot),
            self.meta_wr.en.eq(finishing),
            self.meta_wr.data.queue.eq(queue),
            self.meta_wr.data.seq.eq(seq),
            self.meta_wr.data.head.eq(head),
            self.meta_wr.data.status_addr.eq(status_addr),
            self.meta_wr.data.w_len.eq(w_len),
            self.meta_wr.data.n_r.eq(n_r),
            self.meta_wr.data.n_desc.eq(idx),
        ]
        with m.If(req.valid & req.ready):
            m.d.sync += finishing.eq(0)

        m.d.comb += self.release.ready.eq(1)
        with m.If(self.release.valid):
            m.d.sync += busy.bit_select(self.release.payload, 1).eq(0)
        return m
