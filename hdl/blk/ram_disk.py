"""An on-chip RAM disk behind the storage port, with banks that answer at different speeds."""
from amaranth.hdl import Array, Cat, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import exact_log2

from hdl.blk.storage_port import StorageOp, StorageSignature, beats_per_sector
from hdl.virtio.spec import VIRTIO_BLK_SECTOR_BYTES

__all__ = ["RamDisk", "bank_of", "bank_location"]

SECTOR = VIRTIO_BLK_SECTOR_BYTES


def bank_of(sector: int, *, banks: int, stripe: int) -> int:
    """The bank holding ``sector``: sectors are striped over the banks ``stripe`` at a time."""
    return (sector // stripe) % banks


def bank_location(sector: int, *, banks: int, stripe: int) -> tuple[int, int]:
    """``(bank, sector index inside the bank)`` of ``sector``."""
    row, within = divmod(sector, stripe)
    return row % banks, (row // banks) * stripe + within


class RamDisk(wiring.Component):
    """A disk of ``capacity`` sectors in block RAM, serving the storage port
    (``hdl/blk/storage_port.py``) with per-bank latencies, so commands finish out of order.

    The sectors are striped over ``banks`` memories (``amaranth.lib.memory.Memory``, one
    ``width``-bit word per beat), ``stripe`` consecutive sectors per bank in turn
    (:func:`bank_location`). A command waits in one of ``slots`` slots for the latency of
    the bank holding its first sector, ``latency[bank]`` cycles, plus, with ``jitter`` > 1,
    a pseudo-random 0 .. ``jitter`` - 1 more (16-bit Galois LFSR from ``seed``); a FLUSH
    waits ``latency[0]`` (+ jitter). Then:

    * a READ, once its wait is over and the read path is free, streams its sectors (across
      banks as needed) at one beat per clock as one burst; ready READs go lowest slot first;
    * a WRITE's data is taken as it comes (commands in order, one beat per clock, whatever
      the waits) and written at once; its ``done`` comes once its wait is over and all its
      data is in;
    * a FLUSH is taken only once every earlier WRITE's ``done`` has been taken (so those
      WRITEs are done, and a RAM disk is then as durable as it gets), and is done after its
      wait.

    Waits of different lengths make later commands overtake earlier ones, which is what the
    request engine and the reorder buffers must cope with. Nothing ever fails (``error`` is
    always 0). Commands are assumed inside the capacity, as the storage port promises.

    Reset: ``rst`` empties the slots and the read and write paths; the contents stay (they
    are memory, initially ``init``). There is no device reset: the request engine drains the
    port instead.

    Parameters
    ----------
    width : int
        Data width (64 or 128).
    tag_width : int
        Tag width of the storage port.
    capacity : int
        Sectors: a multiple of ``banks * stripe``.
    banks : int
        Memories, a power of two.
    stripe : int
        Consecutive sectors per bank, a power of two.
    latency : tuple of int
        Cycles each bank makes a command wait (one per bank, 0 or more).
    jitter : int
        Span of the extra pseudo-random wait, a power of two (1: none).
    slots : int
        Commands held at once (1 or more).
    seed : int
        LFSR start value (16 bits, not 0).
    init : bytes or None
        Initial contents, ``capacity * 512`` bytes (zeros when None).

    Attributes
    ----------
    storage : In(StorageSignature(width=width, tag_width=tag_width))
    capacity : int
    """

    def __init__(self, *, width: int = 64, tag_width: int = 4, capacity: int = 128,
                 banks: int = 4, stripe: int = 8, latency: tuple[int, ...] = (4, 16, 40, 90),
                 jitter: int = 1, slots: int = 8, seed: int = 0xACE1,
                 init: bytes | None = None):
        beats_per_sector(width)
        for name, value in (("banks", banks), ("stripe", stripe), ("jitter", jitter)):
            if not isinstance(value, int) or value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, not {value!r}")
        if not isinstance(capacity, int) or capacity < 1 or capacity % (banks * stripe):
            raise ValueError(f"capacity must be a positive multiple of banks * stripe = "
                             f"{banks * stripe} sectors, not {capacity!r}")
        latency = tuple(latency)
        if len(latency) != banks or any(not isinstance(t, int) or t < 0 for t in latency):
            raise ValueError(f"latency must give a wait of 0 or more cycles for each of the "
                             f"{banks} banks, not {latency!r}")
        if not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots!r}")
        if not 0 < seed < 1 << 16:
            raise ValueError(f"seed must be a non-zero 16-bit value, not {seed!r}")
        if init is not None and len(init) != capacity * SECTOR:
            raise ValueError(f"init is {len(init)} bytes, a disk of {capacity} sectors holds "
                             f"{capacity * SECTOR}")
        self.width = width
        self.tag_width = tag_width
        self.capacity = capacity
        self.banks = banks
        self.stripe = stripe
        self.latency = latency
        self.jitter = jitter
        self.slots = slots
        self.seed = seed
        self.init = init
        super().__init__({
            "storage": In(StorageSignature(width=width, tag_width=tag_width)),
        })

    def _bank_words(self, bank: int) -> list[int]:
        """Initial words of one bank."""
        if self.init is None:
            return []
        nbytes = self.width // 8
        words = []
        per_bank = self.capacity // self.banks
        for local in range(per_bank):
            row, within = divmod(local, self.stripe)
            sector = (row * self.banks + bank) * self.stripe + within
            chunk = self.init[sector * SECTOR:(sector + 1) * SECTOR]
            words += [int.from_bytes(chunk[k:k + nbytes], "little")
                      for k in range(0, SECTOR, nbytes)]
        return words

    def elaborate(self, platform):
        m = Module()
        st = self.storage
        spb = beats_per_sector(self.width)
        beat_bits = exact_log2(spb)
        bank_bits = exact_log2(self.banks)
        stripe_bits = exact_log2(self.stripe)
        per_bank = self.capacity // self.banks
        local_bits = max(1, (per_bank - 1).bit_length())
        sector_bits = max(1, (self.capacity - 1).bit_length())

        mems = []
        for b in range(self.banks):
            mem = Memory(shape=unsigned(self.width), depth=per_bank * spb,
                         init=self._bank_words(b))
            m.submodules[f"bank{b}"] = mem
            mems.append(mem)
        addr_width = (per_bank * spb - 1).bit_length()

        def bank(sector):
            return sector[stripe_bits:stripe_bits + bank_bits] if bank_bits else 0

        def word_addr(sector, beat):
            local = Cat(sector[:stripe_bits], sector[stripe_bits + bank_bits:])
            return Cat(beat[:beat_bits], local[:local_bits])[:addr_width]

        # 16-bit Galois LFSR, taps 16, 14, 13, 11 (maximal length).
        lfsr = Signal(16, init=self.seed)
        m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0xB400, lfsr >> 1))
        jitter = lfsr[:exact_log2(self.jitter)] if self.jitter > 1 else 0

        # --- command slots ---------------------------------------------------------------------
        max_wait = max(self.latency) + self.jitter - 1
        slot_layout = data.StructLayout({
            "valid": 1,
            "op": StorageOp,
            "tag": self.tag_width,
            "sector": sector_bits,
            "count": range(self.capacity + 1),
            "timer": range(max_wait + 1),
            "data_in": 1,           # a WRITE's data has all been written
        })
        slots = Array(Signal(slot_layout, name=f"slot{k}") for k in range(self.slots))
        slot_bits = max(1, (self.slots - 1).bit_length())

        def pick(cond):
            found = Signal()
            index = Signal(slot_bits)
            for k in reversed(range(self.slots)):
                with m.If(cond(slots[k])):
                    m.d.comb += [found.eq(1), index.eq(k)]
            return found, index

        free_found, free_slot = pick(lambda s: ~s.valid)
        # A WRITE is pending from its acceptance until its done has been taken: its slot is
        # freed when the done is loaded into the output register, where it may still wait.
        done_valid = Signal()
        done_is_write = Signal()
        writes_pending = Signal()
        m.d.comb += writes_pending.eq(
            (sum((s.valid & (s.op == StorageOp.WRITE)) for s in slots) != 0)
            | (done_valid & done_is_write))

        # WRITE data arrives in command order: the slots of accepted WRITEs, in order.
        m.submodules.write_order = order = fifo.SyncFIFOBuffered(width=slot_bits,
                                                                 depth=self.slots)
        c = st.cmd.payload
        is_flush = c.op == StorageOp.FLUSH
        m.d.comb += st.cmd.ready.eq(free_found & ~(is_flush & writes_pending) & order.w_rdy)
        accept = st.cmd.valid & st.cmd.ready
        latencies = Array(self.latency)
        m.d.comb += [order.w_data.eq(free_slot),
                     order.w_en.eq(accept & (c.op == StorageOp.WRITE))]

        # --- completions: done for WRITE / FLUSH, bursts for READ ---------------------------------
        done_found, done_slot = pick(lambda s: s.valid & (s.timer == 0) & (
            ((s.op == StorageOp.WRITE) & s.data_in) | (s.op == StorageOp.FLUSH)))
        done_tag = Signal(self.tag_width)
        load_done = done_found & (~done_valid | st.done.ready)
        with m.If(load_done):
            m.d.sync += [done_valid.eq(1), done_tag.eq(slots[done_slot].tag),
                         done_is_write.eq(slots[done_slot].op == StorageOp.WRITE)]
        with m.Elif(st.done.ready):
            m.d.sync += done_valid.eq(0)
        m.d.comb += [st.done.valid.eq(done_valid), st.done.payload.tag.eq(done_tag),
                     st.done.payload.error.eq(0)]

        # Read path: one burst at a time, one beat per clock from whichever bank holds it.
        r_left = Signal(range(self.capacity * spb + 1))      # beats still to read
        r_sector = Signal(sector_bits)
        r_beat = Signal(beat_bits or 1)
        r_tag = Signal(self.tag_width)
        read_found, read_slot = pick(lambda s: s.valid & (s.timer == 0)
                                     & (s.op == StorageOp.READ))
        start_read = read_found & (r_left == 0)
        with m.If(start_read):
            m.d.sync += [r_left.eq(slots[read_slot].count * spb),
                         r_sector.eq(slots[read_slot].sector), r_beat.eq(0),
                         r_tag.eq(slots[read_slot].tag)]

        o_valid = Signal()
        o_last = Signal()
        o_tag = Signal(self.tag_width)
        o_bank = Signal(bank_bits or 1)
        advance = ~o_valid | st.rd_data.ready      # the output register may take a new word
        ports = []
        for b, mem in enumerate(mems):
            port = mem.read_port()
            m.d.comb += [port.addr.eq(word_addr(r_sector, r_beat)),
                         port.en.eq(advance & (r_left != 0) & (bank(r_sector) == b))]
            ports.append(port)
        with m.If(advance):
            m.d.sync += o_valid.eq(r_left != 0)
            with m.If(r_left != 0):
                m.d.sync += [o_last.eq(r_left == 1), o_tag.eq(r_tag),
                             o_bank.eq(bank(r_sector)), r_left.eq(r_left - 1)]
                if beat_bits:
                    m.d.sync += r_beat.eq(r_beat + 1)
                    with m.If(r_beat == spb - 1):
                        m.d.sync += r_sector.eq(r_sector + 1)
                else:
                    m.d.sync += r_sector.eq(r_sector + 1)
        m.d.comb += [
            st.rd_data.valid.eq(o_valid),
            st.rd_data.payload.data.eq(Array(p.data for p in ports)[o_bank]),
            st.rd_data.payload.last.eq(o_last),
            st.rd_data.payload.tag.eq(o_tag),
            st.rd_data.payload.error.eq(0),
        ]

        # Write path: the WRITE at the head of the order queue takes its beats.
        w_active = Signal()
        w_slot = Signal(slot_bits)
        w_left = Signal(range(self.capacity * spb + 1))
        w_sector = Signal(sector_bits)
        w_beat = Signal(beat_bits or 1)
        m.d.comb += order.r_en.eq(~w_active & order.r_rdy)
        with m.If(~w_active & order.r_rdy):
            m.d.sync += [w_active.eq(1), w_slot.eq(order.r_data),
                         w_left.eq(slots[order.r_data].count * spb),
                         w_sector.eq(slots[order.r_data].sector), w_beat.eq(0)]
        m.d.comb += st.wr_data.ready.eq(w_active)
        w_take = st.wr_data.valid & st.wr_data.ready
        for b, mem in enumerate(mems):
            port = mem.write_port()
            m.d.comb += [port.addr.eq(word_addr(w_sector, w_beat)),
                         port.data.eq(st.wr_data.payload.data),
                         port.en.eq(w_take & (bank(w_sector) == b))]
        w_finished = w_take & (w_left == 1)
        with m.If(w_take):
            m.d.sync += w_left.eq(w_left - 1)
            if beat_bits:
                m.d.sync += w_beat.eq(w_beat + 1)
                with m.If(w_beat == spb - 1):
                    m.d.sync += w_sector.eq(w_sector + 1)
            else:
                m.d.sync += w_sector.eq(w_sector + 1)
            with m.If(w_left == 1):
                m.d.sync += w_active.eq(0)

        # --- slot updates -------------------------------------------------------------------
        for k in range(self.slots):
            s = slots[k]
            with m.If(s.valid & (s.timer != 0)):
                m.d.sync += s.timer.eq(s.timer - 1)
            with m.If(w_finished & (w_slot == k)):
                m.d.sync += s.data_in.eq(1)
            with m.If((load_done & (done_slot == k)) | (start_read & (read_slot == k))):
                m.d.sync += s.valid.eq(0)
            with m.If(accept & (free_slot == k)):
                m.d.sync += [
                    s.valid.eq(1),
                    s.op.eq(c.op),
                    s.tag.eq(c.tag),
                    s.sector.eq(c.sector),
                    s.count.eq(c.count),
                    s.timer.eq(Mux(is_flush, self.latency[0], latencies[bank(c.sector)])
                               + jitter),
                    s.data_in.eq(0),
                ]
        return m
