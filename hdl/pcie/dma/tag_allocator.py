"""Free list of MemRd tags (PCIe Base §2.2.6.2, Transaction Descriptor Tag field)."""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["TagAllocator"]

BASE_TAGS = 32
"""Tags usable without Extended Tag Field Enable: 5-bit tags 0..31 (§2.2.6.2)."""


class TagAllocator(wiring.Component):
    """Hands out free tags and takes them back.

    Tags 0..31 are always usable; tags 32 and up only while ``ext_tag_en`` is set (Device
    Control bit 8, §7.5.3.4). After reset the allocator fills its free lists (one tag per
    clock, ``tags`` clocks) and hands out nothing until each tag is on one.

    Parameters
    ----------
    tags : int
        Tags managed, 1..256.

    Attributes
    ----------
    alloc : Out(stream.Signature(8))
        The next free tag; a transfer takes it.
    free : In(stream.Signature(8))
        A tag given back; always ready once the free lists are filled. Each tag is given back
        at most once per allocation (the caller's promise).
    ext_tag_en : In(1)
        Extended Tag Field Enable.
    pending : Out(1)
        Some tag is handed out and not yet given back: a non-posted request is outstanding
        (for Device Status Transactions Pending, §7.5.3.5). Low while the lists fill.
    """

    def __init__(self, *, tags: int = 32):
        if not isinstance(tags, int) or not 1 <= tags <= 256:
            raise ValueError(f"tags must be an integer 1..256, not {tags!r}")
        self.tags = tags
        super().__init__({
            "alloc": Out(stream.Signature(8)),
            "free": In(stream.Signature(8)),
            "ext_tag_en": In(1),
            "pending": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n_low = min(self.tags, BASE_TAGS)
        n_high = self.tags - n_low
        m.submodules.low = low = fifo.SyncFIFOBuffered(width=8, depth=n_low)

        init = Signal(range(self.tags + 1))
        filling = init != self.tags
        push_tag = Mux(filling, init, self.free.payload)
        push = filling | self.free.valid
        m.d.comb += self.free.ready.eq(~filling)
        with m.If(filling):
            m.d.sync += init.eq(init + 1)

        m.d.comb += low.w_data.eq(push_tag)
        if n_high:
            m.submodules.high = high = fifo.SyncFIFOBuffered(width=8, depth=n_high)
            is_high = push_tag >= BASE_TAGS
            m.d.comb += self.pending.eq(~filling & (low.level + high.level != self.tags))
            m.d.comb += [
                low.w_en.eq(push & ~is_high),
                high.w_data.eq(push_tag),
                high.w_en.eq(push & is_high),
            ]
            # Prefer low tags, so a host that later clears Extended Tag finds most tags usable.
            use_high = ~low.r_rdy & self.ext_tag_en
            m.d.comb += [
                self.alloc.valid.eq(~filling & (low.r_rdy | use_high & high.r_rdy)),
                self.alloc.payload.eq(Mux(use_high, high.r_data, low.r_data)),
                low.r_en.eq(self.alloc.ready & ~filling & ~use_high),
                high.r_en.eq(self.alloc.ready & ~filling & use_high),
            ]
        else:
            m.d.comb += self.pending.eq(~filling & (low.level != self.tags))
            m.d.comb += [
                low.w_en.eq(push),
                self.alloc.valid.eq(~filling & low.r_rdy),
                self.alloc.payload.eq(low.r_data),
                low.r_en.eq(self.alloc.ready & ~filling),
            ]
        return m
