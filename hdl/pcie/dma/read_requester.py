"""Turns the read channels' pieces into MemRd TLPs, one tag each."""
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.spec import tlp_signature
from hdl.pcie.dma.layouts import issue_layout, read_sub_layout, refuse_layout
from hdl.pcie.dma.request import fill_mem_request

__all__ = ["ReadRequester"]


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


class ReadRequester(wiring.Component):
    """Issues one MemRd TLP (PCIe Base §2.2.7) per read piece, round robin over channels.

    Each piece gets the tag at the head of the free list when its TLP leaves; at that moment
    the tag, channel, slot and buffer position go to the completion tracker. While Bus Master
    Enable is clear a piece is not issued but refused (its slot ends with NO_BUS_MASTER), so
    nothing waits for a host that has turned bus mastering off (§7.5.1.1.3).

    Parameters
    ----------
    width : int
        TLP stream width in bits (64 or 128).
    channels : int
        Read channels.
    ring_beats, slots : int
        Buffer beats and reorder slots per channel (sizes of the fields carried).

    Attributes
    ----------
    sub : In(stream.Signature(read_sub_layout(...))).array(channels)
        Read pieces, each at most 4096 bytes and within one 4 KiB page.
    tlp : Out(tlp_signature(width))
        MemRd TLPs (one beat each, no payload).
    alloc : In(stream.Signature(8))
        Free tags.
    issue : Out(stream.Signature(issue_layout(...)))
        Sent MemRd records for the completion tracker (which is always ready).
    refuse : Out(stream.Signature(refuse_layout(...)))
        Pieces not issued for want of Bus Master Enable.
    bme : In(1)
    requester_id : In(16)
    """

    def __init__(self, *, width: int, channels: int, ring_beats: int, slots: int):
        self.width = width
        self.channels = channels
        self.lanes = width // 32
        self.chan_bits = _bits(channels)
        self.slot_bits = _bits(slots)
        self.ring_bits = _bits(ring_beats)
        self.sub_layout = read_sub_layout(self.ring_bits, self.slot_bits)
        super().__init__({
            "sub": In(stream.Signature(self.sub_layout)).array(channels),
            "tlp": Out(tlp_signature(width)),
            "alloc": In(stream.Signature(8)),
            "issue": Out(stream.Signature(issue_layout(
                self.chan_bits, self.slot_bits, self.ring_bits, (self.lanes - 1).bit_length()))),
            "refuse": Out(stream.Signature(refuse_layout(self.chan_bits, self.slot_bits))),
            "bme": In(1),
            "requester_id": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.channels
        held_valid = Signal()
        held = Signal(self.sub_layout)
        held_chan = Signal(self.chan_bits)

        send = self.tlp.valid & self.tlp.ready
        drop = self.refuse.valid & self.refuse.ready
        load = ~held_valid | send | drop

        # Round robin: the first channel with a piece after the one served last.
        last = Signal(range(n))
        chosen = Signal(range(n))
        found = Signal()
        for rr in range(n):
            with m.If(last == rr):
                for i in reversed([(rr + 1 + k) % n for k in range(n)]):
                    with m.If(self.sub[i].valid):
                        m.d.comb += [chosen.eq(i), found.eq(1)]
        with m.If(load):
            m.d.sync += held_valid.eq(found)
            for i in range(n):
                with m.If(found & (chosen == i)):
                    m.d.comb += self.sub[i].ready.eq(1)
                    m.d.sync += [held.eq(self.sub[i].payload), held_chan.eq(i), last.eq(i)]

        tag = self.alloc.payload
        m.d.comb += [
            self.tlp.valid.eq(held_valid & self.bme & self.alloc.valid),
            self.tlp.payload.first.eq(1),
            self.tlp.payload.last.eq(1),
            self.alloc.ready.eq(send),
            self.issue.valid.eq(send),
            self.issue.payload.tag.eq(tag),
            self.issue.payload.chan.eq(held_chan),
            self.issue.payload.slot.eq(held.slot),
            self.issue.payload.ring_base.eq(held.ring_base),
            self.issue.payload.end_rel.eq(held.addr[:(self.lanes * 4 - 1).bit_length()] +
                                          held.len),
            self.refuse.valid.eq(held_valid & ~self.bme),
            self.refuse.payload.chan.eq(held_chan),
            self.refuse.payload.slot.eq(held.slot),
        ]
        fill_mem_request(m, self.tlp.payload.hdr, write=False, addr=held.addr,
                         length=held.len, requester_id=self.requester_id, tag=tag)
        return m
