"""A backend for testing the virtqueue engine: writes a pattern, completes out of order."""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.pcie.dma_port import MAX_DMA_LEN, WriteChannelSignature
from hdl.virtio.virtqueue_port import VirtqElemDesc, VirtqElemDone

__all__ = ["TestBackend", "pattern_byte", "pattern_bytes"]


def pattern_tag(queue: int, seq: int, head: int) -> int:
    """The per-element part of the pattern: ``(head + 7 * seq + 53 * queue) mod 256``."""
    return (head + 7 * seq + 53 * queue) & 0xFF


def pattern_byte(queue: int, seq: int, head: int, offset: int) -> int:
    """The byte :class:`TestBackend` writes at ``offset`` of an element's device-writable
    bytes (counted across its writable descriptors in chain order):
    ``(head + 7 * seq + 53 * queue + offset + (offset >> 8)) mod 256``. The ``offset >> 8``
    term makes every 256-byte stretch different."""
    return (pattern_tag(queue, seq, head) + offset + (offset >> 8)) & 0xFF


def pattern_bytes(queue: int, seq: int, head: int, offset: int, length: int) -> bytes:
    """``length`` pattern bytes from ``offset`` (see :func:`pattern_byte`)."""
    tag = pattern_tag(queue, seq, head)
    return bytes((tag + o + (o >> 8)) & 0xFF for o in range(offset, offset + length))


class _State(enum.Enum, shape=3):
    TAKE = 0        # wait for a descriptor beat
    CMD = 1         # offer a write command for the next chunk
    DATA = 2        # send the chunk's data
    PARK = 3        # element complete: wait for its writes' done and a free slot


class TestBackend(wiring.Component):
    """Completes every element after writing a recognisable pattern into its writable buffers.

    For each element (taken one at a time from ``elem``) it writes, through its own DMA write
    channel, :func:`pattern_byte` into every device-writable descriptor (chunks of at most
    ``max_chunk`` bytes; zero-length descriptors and readable ones are not touched). Once all
    those writes are ``done``, the element waits in one of ``slots`` slots for a pseudo-random
    latency of ``min_latency + (lfsr mod latency_span)`` cycles (16-bit Galois LFSR, advanced
    every cycle, ``seed`` its start), then is completed on ``done`` with
    ``written_len`` = its total writable bytes. Elements with different latencies complete out
    of order; among those ready, the lowest slot goes first.

    After ``rst`` it is empty; ``reset``/``idle`` is the device reset handshake below.

    Parameters
    ----------
    seq_width, width : int
        As the engine's ports.
    slots : int
        Elements waiting for their latency at once (at least 1).
    min_latency : int
        Shortest wait, in cycles (0 or more).
    latency_span : int
        Number of different latencies, a power of two (1: every wait is ``min_latency``).
    max_chunk : int
        Largest write command in bytes (power of two, at most 65536).
    seed : int
        LFSR start value (non-zero, 16 bits).

    Attributes
    ----------
    elem : In(stream.Signature(VirtqElemDesc(seq_width)))
    done : Out(stream.Signature(VirtqElemDone(seq_width)))
        Held until taken.
    wr : Out(WriteChannelSignature(width))
    reset : In(1)
        Device reset: descriptor beats are taken and dropped, waiting elements are
        forgotten, a write in progress is finished and its ``done`` awaited.
    idle : Out(1)
        Under ``reset``: nothing outstanding any more.
    """

    def __init__(self, *, seq_width: int, width: int = 64, slots: int = 8,
                 min_latency: int = 0, latency_span: int = 64, max_chunk: int = 4096,
                 seed: int = 0xACE1):
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots}")
        if min_latency < 0:
            raise ValueError(f"min_latency must be 0 or more, not {min_latency}")
        if latency_span < 1 or latency_span & (latency_span - 1) or latency_span > 1 << 16:
            raise ValueError(f"latency_span must be a power of two up to 65536, "
                             f"not {latency_span}")
        if max_chunk < 8 or max_chunk & (max_chunk - 1) or max_chunk > MAX_DMA_LEN:
            raise ValueError(f"max_chunk must be a power of two from 8 to {MAX_DMA_LEN}, "
                             f"not {max_chunk}")
        if not 0 < seed < 1 << 16:
            raise ValueError(f"seed must be a non-zero 16-bit value, not {seed}")
        self.seq_width = seq_width
        self.width = width
        self.slots = slots
        self.min_latency = min_latency
        self.latency_span = latency_span
        self.max_chunk = max_chunk
        self.seed = seed
        super().__init__({
            "elem": In(stream.Signature(VirtqElemDesc(seq_width))),
            "done": Out(stream.Signature(VirtqElemDone(seq_width))),
            "wr": Out(WriteChannelSignature(width)),
            "reset": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = self.width // 8

        # 16-bit Galois LFSR, taps 16, 14, 13, 11 (maximal length).
        lfsr = Signal(16, init=self.seed)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0xB400, lfsr >> 1))

        state = Signal(_State)
        beat = Signal(self.elem.payload.shape())
        first = Signal(init=1)          # the next beat starts an element
        offset = Signal(32)             # writable bytes of the element written so far
        addr = Signal(64)
        remaining = Signal(32)          # bytes of the descriptor still to write
        chunk = Signal(range(self.max_chunk + 1))
        sent = Signal(range(self.max_chunk + 1))     # bytes of the chunk already sent
        outstanding = Signal(range(256))             # writes without done
        wlen = Signal(32)

        # --- taking descriptors and writing the pattern -----------------------------------
        m.d.comb += self.elem.ready.eq((state == _State.TAKE)
                                      | (self.reset & (state == _State.PARK)))
        with m.If(self.elem.valid & self.elem.ready & ~self.reset):
            p = self.elem.payload
            m.d.sync += [
                beat.eq(p),
                addr.eq(p.addr),
                remaining.eq(p.len),
                first.eq(p.last),
            ]
            with m.If(first):
                m.d.sync += [offset.eq(0), wlen.eq(Mux(p.write, p.len, 0))]
            with m.Elif(p.write):
                m.d.sync += wlen.eq(wlen + p.len)
            with m.If(p.write & (p.len != 0)):
                m.d.sync += state.eq(_State.CMD)
            with m.Elif(p.last):
                m.d.sync += state.eq(_State.PARK)

        cmd = self.wr.cmd
        with m.If(state == _State.CMD):
            # A command once offered is kept (also under reset) and its data sent.
            clen = Mux(remaining > self.max_chunk, self.max_chunk, remaining)
            m.d.comb += [
                cmd.valid.eq(1),
                cmd.payload.addr.eq(addr),
                cmd.payload.len.eq(clen),
            ]
            with m.If(cmd.ready):
                m.d.sync += [chunk.eq(clen), sent.eq(0), state.eq(_State.DATA),
                             outstanding.eq(outstanding + 1 - self.wr.done.valid)]

        # Pattern bytes for the beat at element offset ``offset``.
        tag = Signal(8)
        m.d.comb += tag.eq(beat.head + beat.seq * 7 + beat.queue * 53)
        lanes = []
        for lane in range(nbytes):
            o = Signal(32, name=f"o{lane}")
            m.d.comb += o.eq(offset + lane)
            lanes.append((tag + o[:8] + o[8:16])[:8])
        wdata = self.wr.data
        with m.If(state == _State.DATA):
            last_beat = sent + nbytes >= chunk
            m.d.comb += [
                wdata.valid.eq(1),
                wdata.payload.data.eq(Cat(*lanes)),
                wdata.payload.last.eq(last_beat),
            ]
            with m.If(wdata.ready):
                step = Mux(last_beat, chunk - sent, nbytes)
                m.d.sync += [sent.eq(sent + nbytes), offset.eq(offset + step)]
                with m.If(last_beat):
                    m.d.sync += [addr.eq(addr + chunk), remaining.eq(remaining - chunk)]
                    with m.If(self.reset):
                        m.d.sync += state.eq(_State.TAKE)
                    with m.Elif(remaining != chunk):
                        m.d.sync += state.eq(_State.CMD)
                    with m.Elif(beat.last):
                        m.d.sync += state.eq(_State.PARK)
                    with m.Else():
                        m.d.sync += state.eq(_State.TAKE)
        m.d.comb += self.wr.done.ready.eq(1)
        with m.If(self.wr.done.valid & ~((state == _State.CMD) & cmd.ready)):
            m.d.sync += outstanding.eq(outstanding - 1)

        # --- waiting slots ------------------------------------------------------------------
        span_bits = exact_log2(self.latency_span)
        max_wait = self.min_latency + self.latency_span - 1
        slot_layout = data.StructLayout({
            "valid": 1,
            "timer": range(max_wait + 1),
            "queue": 4,
            "seq": self.seq_width,
            "head": 16,
            "wlen": 32,
        })
        slots = [Signal(slot_layout, name=f"slot{i}") for i in range(self.slots)]
        free = Signal(range(self.slots))
        has_free = Signal()
        for i in reversed(range(self.slots)):
            with m.If(~slots[i].valid):
                m.d.comb += [free.eq(i), has_free.eq(1)]
        park = (state == _State.PARK) & (outstanding == 0) & has_free & ~self.reset
        with m.If(state == _State.PARK):
            with m.If(self.reset | park):
                m.d.sync += state.eq(_State.TAKE)

        o_valid = Signal()
        o_done = Signal(self.done.payload.shape())
        ready_slot = Signal(range(self.slots))
        any_ready = Signal()
        for i in reversed(range(self.slots)):
            with m.If(slots[i].valid & (slots[i].timer == 0)):
                m.d.comb += [ready_slot.eq(i), any_ready.eq(1)]
        load = (~o_valid | self.done.ready) & any_ready & ~self.reset
        with m.If(self.done.valid & self.done.ready):
            m.d.sync += o_valid.eq(0)
        for i, slot in enumerate(slots):
            with m.If(slot.valid & (slot.timer != 0)):
                m.d.sync += slot.timer.eq(slot.timer - 1)
            with m.If(load & (ready_slot == i)):
                m.d.sync += slot.valid.eq(0)
            with m.If(park & (free == i)):
                m.d.sync += [
                    slot.valid.eq(1),
                    slot.timer.eq(self.min_latency + lfsr[:span_bits] if span_bits else
                                  self.min_latency),
                    slot.queue.eq(beat.queue),
                    slot.seq.eq(beat.seq),
                    slot.head.eq(beat.head),
                    slot.wlen.eq(wlen),
                ]
            with m.If(self.reset):
                m.d.sync += slot.valid.eq(0)
        with m.If(load):
            for i, slot in enumerate(slots):
                with m.If(ready_slot == i):
                    m.d.sync += [
                        o_valid.eq(1),
                        o_done.queue.eq(slot.queue),
                        o_done.seq.eq(slot.seq),
                        o_done.head.eq(slot.head),
                        o_done.written_len.eq(slot.wlen),
                    ]
        with m.If(self.reset):
            # Whatever element was being taken is forgotten: the next beat starts one.
            m.d.sync += [o_valid.eq(0), first.eq(1)]
        m.d.comb += [
            self.done.valid.eq(o_valid),
            self.done.payload.eq(o_done),
            self.idle.eq(self.reset & ((state == _State.TAKE) | (state == _State.PARK))
                         & (outstanding == 0)),
        ]
        return m
