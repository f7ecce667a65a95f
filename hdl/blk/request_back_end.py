"""The out-of-order half of the request engine: data and status writes, completions."""
from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.blk.byte_repacker import ByteRepacker
from hdl.blk.layouts import BlkAction, decision_layout, desc_layout, slot_meta_layout
from hdl.blk.storage_port import storage_done_layout, storage_rd_layout
from hdl.pcie.dma_port import MAX_DMA_LEN, DmaError, WriteChannelSignature
from hdl.virtio.spec import VIRTIO_BLK_ID_BYTES, VirtioBlkStatus
from hdl.virtio.virtqueue_port import VirtqElemDone

__all__ = ["RequestBackEnd", "SlotPhase"]


class SlotPhase(enum.Enum, shape=3):
    """Where a request slot is, as far as the back end is concerned."""
    FREE = 0
    BUSY = 1        # collected, being decided, or its storage operation is under way
    GET_ID = 2      # the serial is to be written
    STATUS = 3      # the status byte is to be written (once its data writes are done)
    SENT = 4        # the status write is issued, its done awaited
    DONE = 5        # to be completed on ``done``


class _Job(enum.Enum, shape=2):
    EMIT = 0
    STATUS = 1
    GET_ID = 2
    IN = 3


class RequestBackEnd(wiring.Component):
    """Writes data and status bytes through its DMA write channel and completes requests,
    in whatever order the storage finishes them.

    Per slot it keeps a phase (:class:`SlotPhase`), the status to write, error flags and
    the number of its DMA writes without ``done``. What moves a slot on:

    * ``alloc`` (collector): BUSY, everything cleared;
    * ``decision`` (front end): ``NO_STATUS`` -> DONE with nothing written, ``STATUS`` ->
      STATUS with the decided value, ``GET_ID`` -> GET_ID;
    * ``rerr`` (read router): a DMA read of the slot's OUT data failed;
    * a storage ``done`` (WRITE, FLUSH): STATUS, IOERR if it or an OUT data read failed;
    * the end of a READ burst whose data went out: STATUS, IOERR if the storage said so;
    * the end of the GET_ID write: STATUS, OK.

    One sequencer serves, in this priority whenever it is free: a DONE slot (completion on
    ``done``), a STATUS slot whose data writes are all done (status write: IOERR instead
    if one of them failed), a GET_ID slot (the 20-byte serial), a READ burst waiting on
    ``st_rd`` (whichever slot the storage answers first). Data goes to the slot's writable
    descriptors in order, in commands of at most ``max_chunk`` bytes that never cross a
    descriptor, through a :class:`~hdl.blk.byte_repacker.ByteRepacker` that realigns the
    storage's sector stream to every command's start; the sequencer issues commands ahead of
    the data as far as its FIFOs allow, and the next job starts as soon as the current one's
    data has entered the repacker. The status byte goes last, at the last byte of *W*,
    after the ``done`` of every data write of the slot, and the completion after the
    status write's ``done``, so the driver sees data and status before the used ring
    (the DMA engine keeps writes in order, virtio 1.2 §2.7.8.2).

    ``written_len`` (virtio 1.2 §2.7.8.2, ``docs/robustness.md``): *W* when the status
    written is OK (data and status filled *W*), 1 when *W* is the status byte alone, else 0
    (only the status at the end of a longer *W*, or nothing: no *W*, or the status write
    itself failed).

    A failed status write cannot be reported to the driver: the request completes with
    ``written_len`` 0 and ``needs_reset`` rises (sticky until reset).

    Reset: ``rst`` empties it. Under ``reset`` it starts no job and completes nothing; a
    DMA write command already offered is taken and its data (fed from its source) sent, the
    rest of a READ burst is dropped, later bursts too, and ``quiet`` rises once every write
    has its ``done``.

    Parameters
    ----------
    seq_width, width : int
        As the engine's.
    slots, max_descriptors : int
        As the engine's (powers of two).
    serial : bytes
        The 20-byte GET_ID string.
    max_chunk : int
        Largest DMA write command.
    max_writes : int
        DMA write commands without ``done`` at most.

    Attributes
    ----------
    alloc, rerr : In(stream.Signature(slot))
        Always taken.
    decision : In(stream.Signature(decision_layout(...)))
        Always taken.
    meta_rd, desc_rd : In(ReadPort.Signature(...))
        Read ports of the slot and descriptor memories.
    st_rd : In(stream.Signature(storage_rd_layout(...)))
    st_done : In(stream.Signature(storage_done_layout(...)))
        Always taken.
    wr : Out(WriteChannelSignature(width))
    done : Out(stream.Signature(VirtqElemDone(seq_width)))
    release : Out(stream.Signature(slot))
        The slot is free again (valid one clock).
    reset : In(1)
    quiet : Out(1)
    needs_reset : Out(1)
    """

    def __init__(self, *, seq_width: int, width: int = 64, slots: int = 16,
                 max_descriptors: int = 16, serial: bytes = bytes(VIRTIO_BLK_ID_BYTES),
                 max_chunk: int = 4096, max_writes: int = 16):
        if len(serial) != VIRTIO_BLK_ID_BYTES:
            raise ValueError(f"serial must be {VIRTIO_BLK_ID_BYTES} bytes, not {len(serial)}")
        if max_chunk < 8 or max_chunk & (max_chunk - 1) or max_chunk > MAX_DMA_LEN:
            raise ValueError(f"max_chunk must be a power of two from 8 to {MAX_DMA_LEN}, "
                             f"not {max_chunk}")
        if max_writes < 2:
            raise ValueError(f"max_writes must be at least 2, not {max_writes}")
        self.seq_width = seq_width
        self.width = width
        self.slots = slots
        self.max_descriptors = max_descriptors
        self.serial = bytes(serial)
        self.max_chunk = max_chunk
        self.max_writes = max_writes
        self.slot_bits = exact_log2(slots)
        self.desc_bits = exact_log2(max_descriptors)
        self.repacker = ByteRepacker(width=width, len_width=exact_log2(max_chunk) + 1)
        slot_shape = unsigned(self.slot_bits)
        super().__init__({
            "alloc": In(stream.Signature(slot_shape)),
            "decision": In(stream.Signature(decision_layout(self.slot_bits))),
            "rerr": In(stream.Signature(slot_shape)),
            "meta_rd": In(ReadPort.Signature(addr_width=self.slot_bits,
                                             shape=slot_meta_layout(seq_width,
                                                                    max_descriptors))),
            "desc_rd": In(ReadPort.Signature(addr_width=self.slot_bits + self.desc_bits,
                                             shape=desc_layout)),
            "st_rd": In(stream.Signature(storage_rd_layout(width, self.slot_bits))),
            "st_done": In(stream.Signature(storage_done_layout(self.slot_bits))),
            "wr": Out(WriteChannelSignature(width)),
            "done": Out(stream.Signature(VirtqElemDone(seq_width))),
            "release": Out(stream.Signature(slot_shape)),
            "reset": In(1),
            "quiet": Out(1),
            "needs_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = self.width // 8
        n = self.slots
        IOERR, OK = VirtioBlkStatus.IOERR.value, VirtioBlkStatus.OK.value

        # --- per-slot state -----------------------------------------------------------------
        phase = Array(Signal(SlotPhase, name=f"phase{i}") for i in range(n))
        status = Array(Signal(2, name=f"status{i}") for i in range(n))
        rerr = Array(Signal(name=f"rerr{i}") for i in range(n))         # OUT data read failed
        werr = Array(Signal(name=f"werr{i}") for i in range(n))         # a data write failed
        serr = Array(Signal(name=f"serr{i}") for i in range(n))         # status write failed
        nostatus = Array(Signal(name=f"nostatus{i}") for i in range(n))
        outs = Array(Signal(range(self.max_writes + 1), name=f"outs{i}") for i in range(n))

        # --- DMA write channel: commands, their owners, the data repacker --------------------
        m.submodules.repacker = rp = self.repacker
        m.submodules.segs = segs = fifo.SyncFIFOBuffered(width=len(rp.seg.payload), depth=4)
        m.d.comb += [
            rp.seg.valid.eq(segs.r_rdy),
            rp.seg.payload.eq(segs.r_data),
            segs.r_en.eq(rp.seg.ready),
            self.wr.data.valid.eq(rp.o.valid),
            self.wr.data.payload.data.eq(rp.o.payload.data),
            self.wr.data.payload.last.eq(rp.o.payload.last),
            rp.o.ready.eq(self.wr.data.ready),
        ]
        owner_layout = data.StructLayout({"slot": self.slot_bits, "status": 1})
        m.submodules.owners = owners = fifo.SyncFIFOBuffered(
            width=Shape.cast(owner_layout).width, depth=self.max_writes)
        owner_in = Signal(owner_layout)
        owner = data.View(owner_layout, owners.r_data)
        m.d.comb += owners.w_data.eq(owner_in)

        cmd = self.wr.cmd
        # Offered only while both FIFOs have room; only our own commands take it away, so
        # a command once offered stays offered.
        room = owners.w_rdy & segs.w_rdy
        issued_now = cmd.valid & cmd.ready
        m.d.comb += [
            owners.w_en.eq(issued_now),
            segs.w_en.eq(issued_now),
            segs.w_data.eq(cmd.payload.len),
        ]

        # --- the sequencer's job ----------------------------------------------------------
        job = Signal(_Job)
        js = Signal(self.slot_bits)                 # the job's slot
        meta = self.meta_rd.data
        desc = self.desc_rd.data
        m.d.comb += [self.meta_rd.en.eq(0), self.desc_rd.en.eq(0)]
        final_status = Mux(werr[js], IOERR, status[js])

        # Issuing (IN and GET_ID): walk the writable descriptors.
        i = Signal(range(self.max_descriptors + 1))
        off = Signal(32)                # offset in the current descriptor
        total = Signal(32)              # bytes to write
        issued = Signal(32)             # bytes commands were taken for
        issuing = Signal()              # a data walk is under way
        fed = Signal(32)                # bytes given to the repacker
        feeding = Signal()
        in_error = Signal()             # the storage burst ended with an error
        offered = Signal()              # the data command on cmd was offered last clock
        walk_offer = Signal()           # the walk offers a data command this clock
        c_addr = Signal(64)             # the data command planned for CMD
        c_len = Signal(range(self.max_chunk + 1))
        c_ends_total = Signal()         # it is the walk's last command
        c_ends_desc = Signal()          # it ends its descriptor

        serial_beats = Array(Const(int.from_bytes(self.serial[k:k + nbytes].ljust(nbytes, b"\0"),
                                                  "little"), self.width)
                             for k in range(0, VIRTIO_BLK_ID_BYTES, nbytes))

        def pick(cond):
            """(found, lowest slot index) with cond(slot)."""
            found = Signal()
            index = Signal(self.slot_bits)
            for k in reversed(range(n)):
                with m.If(cond(k)):
                    m.d.comb += [found.eq(1), index.eq(k)]
            return found, index

        done_found, done_slot = pick(lambda k: phase[k] == SlotPhase.DONE)
        status_found, status_slot = pick(lambda k: (phase[k] == SlotPhase.STATUS)
                                         & (outs[k] == 0))
        getid_found, getid_slot = pick(lambda k: phase[k] == SlotPhase.GET_ID)

        # Events on slots from the sequencer (applied with the others below).
        to_status = Signal()            # job ends: js -> STATUS with to_status_value
        to_status_value = Signal(2)
        to_sent = Signal()
        to_free = Signal()

        st_rd = self.st_rd
        with m.FSM() as sequencer:
            with m.State("IDLE"):
                m.d.comb += self.meta_rd.en.eq(1)
                with m.If(self.reset):
                    with m.If(st_rd.valid):
                        m.next = "DROP"
                with m.Elif(done_found):
                    m.d.comb += self.meta_rd.addr.eq(done_slot)
                    m.d.sync += [js.eq(done_slot), job.eq(_Job.EMIT)]
                    m.next = "LOAD"
                with m.Elif(status_found):
                    m.d.comb += self.meta_rd.addr.eq(status_slot)
                    m.d.sync += [js.eq(status_slot), job.eq(_Job.STATUS)]
                    m.next = "LOAD"
                with m.Elif(getid_found):
                    m.d.comb += self.meta_rd.addr.eq(getid_slot)
                    m.d.sync += [js.eq(getid_slot), job.eq(_Job.GET_ID)]
                    m.next = "LOAD"
                with m.Elif(st_rd.valid):
                    m.d.comb += self.meta_rd.addr.eq(st_rd.payload.tag)
                    m.d.sync += [js.eq(st_rd.payload.tag), job.eq(_Job.IN)]
                    m.next = "LOAD"

            with m.State("LOAD"):
                with m.Switch(job):
                    with m.Case(_Job.EMIT):
                        m.next = "EMIT"
                    with m.Case(_Job.STATUS):
                        m.next = "STATUS_CMD"
                    with m.Default():
                        m.d.sync += [
                            i.eq(meta.n_r), off.eq(0), issued.eq(0), fed.eq(0),
                            total.eq(Mux(job == _Job.IN, meta.w_len - 1,
                                         VIRTIO_BLK_ID_BYTES)),
                            issuing.eq(1), feeding.eq(1), in_error.eq(0),
                        ]
                        m.next = "RUN"

            with m.State("EMIT"):
                written = Mux(nostatus[js] | serr[js], 0,
                              Mux(final_status == OK, meta.w_len[:32],
                                  Mux(meta.w_len == 1, 1, 0)))
                m.d.comb += [
                    self.done.valid.eq(~self.reset),
                    self.done.payload.queue.eq(meta.queue),
                    self.done.payload.seq.eq(meta.seq),
                    self.done.payload.head.eq(meta.head),
                    self.done.payload.written_len.eq(written),
                ]
                with m.If(self.reset):
                    m.next = "IDLE"
                with m.Elif(self.done.ready):
                    m.d.comb += to_free.eq(1)
                    m.next = "IDLE"

            with m.State("STATUS_CMD"):
                m.d.comb += [
                    cmd.valid.eq(room & (~self.reset | offered)),
                    cmd.payload.addr.eq(meta.status_addr),
                    cmd.payload.len.eq(1),
                    owner_in.slot.eq(js),
                    owner_in.status.eq(1),
                ]
                m.d.sync += offered.eq(cmd.valid & ~cmd.ready)
                with m.If(issued_now):
                    m.d.comb += to_sent.eq(1)
                    m.next = "STATUS_DATA"
                with m.Elif(self.reset & ~cmd.valid):
                    m.next = "IDLE"

            with m.State("STATUS_DATA"):
                # The command is taken: its byte goes in whatever happens.
                m.d.comb += [
                    rp.i.valid.eq(1),
                    rp.i.payload.data.eq(final_status),
                    rp.i.payload.n.eq(1),
                ]
                with m.If(rp.i.ready):
                    m.next = "IDLE"

            with m.State("RUN"):
                with m.If(~issuing & ~feeding):
                    with m.If(~self.reset):
                        m.d.comb += [to_status.eq(1),
                                     to_status_value.eq(Mux(in_error, IOERR, OK))]
                    m.next = "IDLE"

            with m.State("DROP"):
                m.d.comb += st_rd.ready.eq(1)
                with m.If(st_rd.valid & st_rd.payload.last):
                    m.next = "IDLE"

        # --- the data walk (RUN): descriptors -> commands -------------------------------------
        with m.FSM(name="walk"):
            with m.State("WAIT"):
                with m.If(issuing):
                    m.next = "READ"

            with m.State("READ"):
                m.d.comb += [self.desc_rd.addr.eq(Cat(i[:self.desc_bits], js)),
                             self.desc_rd.en.eq(1)]
                m.next = "PLAN"

            with m.State("PLAN"):
                # The next command, from the descriptor read out (the read port holds it),
                # into registers: the offer in CMD then starts from them.
                rem_desc = Signal(32)
                rem_total = Signal(32)
                m.d.comb += [rem_desc.eq(desc.len - off), rem_total.eq(total - issued)]
                small = Mux(rem_desc < rem_total, rem_desc, rem_total)
                chunk = Mux(small > self.max_chunk, self.max_chunk, small)
                m.d.sync += [
                    c_addr.eq(desc.addr + off),
                    c_len.eq(chunk),
                    c_ends_total.eq(chunk == rem_total),
                    c_ends_desc.eq(chunk == rem_desc),
                ]
                m.next = "CMD"

            with m.State("CMD"):
                m.d.comb += [
                    cmd.valid.eq(room & (~self.reset | offered)),
                    cmd.payload.addr.eq(c_addr),
                    cmd.payload.len.eq(c_len),
                    owner_in.slot.eq(js),
                    owner_in.status.eq(0),
                ]
                m.d.sync += offered.eq(cmd.valid & ~cmd.ready)
                m.d.comb += walk_offer.eq(cmd.valid)
                with m.If(issued_now):
                    m.d.sync += issued.eq(issued + c_len)
                    with m.If(c_ends_total):
                        m.d.sync += issuing.eq(0)
                        m.next = "WAIT"
                    with m.Elif(c_ends_desc):
                        m.d.sync += [i.eq(i + 1), off.eq(0)]
                        m.next = "READ"
                    with m.Else():
                        m.d.sync += off.eq(off + c_len)
                        m.next = "PLAN"
                with m.Elif(self.reset & ~cmd.valid):
                    m.d.sync += issuing.eq(0)
                    m.next = "WAIT"

        # --- feeding the repacker (RUN) -------------------------------------------------------
        # Under reset only the bytes of commands taken, or offered (an offer is never
        # withdrawn, so it will be taken), are fed; the rest is dropped.
        may_feed = ~self.reset | (fed < issued) | walk_offer
        with m.If(feeding):
            with m.If(job == _Job.IN):
                with m.If(may_feed):
                    m.d.comb += [
                        rp.i.valid.eq(st_rd.valid),
                        rp.i.payload.data.eq(st_rd.payload.data),
                        rp.i.payload.n.eq(nbytes),
                        st_rd.ready.eq(rp.i.ready),
                    ]
                with m.Else():
                    m.d.comb += st_rd.ready.eq(1)
                with m.If(st_rd.valid & st_rd.ready):
                    m.d.sync += fed.eq(fed + nbytes)
                    with m.If(st_rd.payload.last):
                        m.d.sync += [feeding.eq(0), in_error.eq(st_rd.payload.error)]
            with m.Else():
                left = Signal(range(VIRTIO_BLK_ID_BYTES + 1))
                m.d.comb += left.eq(VIRTIO_BLK_ID_BYTES - fed)
                count = Mux(left > nbytes, nbytes, left)
                with m.If(may_feed):
                    m.d.comb += [
                        rp.i.valid.eq(1),
                        rp.i.payload.data.eq(serial_beats[fed[exact_log2(nbytes):]]),
                        rp.i.payload.n.eq(count),
                    ]
                    with m.If(rp.i.ready):
                        m.d.sync += fed.eq(fed + count)
                        with m.If(count == left):
                            m.d.sync += feeding.eq(0)
                with m.Else():
                    m.d.sync += feeding.eq(0)

        # --- DMA write done ----------------------------------------------------------------
        wdone = self.wr.done
        m.d.comb += [wdone.ready.eq(1), owners.r_en.eq(wdone.valid)]
        wfail = wdone.valid & (wdone.payload.error != DmaError.NONE)
        needs_reset = Signal()
        with m.If(wfail & owner.status):
            m.d.sync += needs_reset.eq(1)
        m.d.comb += self.needs_reset.eq(needs_reset)

        # --- slot state updates --------------------------------------------------------------
        m.d.comb += [self.alloc.ready.eq(1), self.decision.ready.eq(1), self.rerr.ready.eq(1),
                     self.st_done.ready.eq(1)]
        dec = self.decision.payload
        sd = self.st_done.payload
        for k in range(n):
            inc = issued_now & (js == k)
            dec_ = wdone.valid & (owner.slot == k)
            with m.If(inc & ~dec_):
                m.d.sync += outs[k].eq(outs[k] + 1)
            with m.Elif(dec_ & ~inc):
                m.d.sync += outs[k].eq(outs[k] - 1)
            with m.If(dec_ & wfail):
                with m.If(owner.status):
                    m.d.sync += serr[k].eq(1)
                with m.Else():
                    m.d.sync += werr[k].eq(1)
            with m.If(dec_ & owner.status):
                m.d.sync += phase[k].eq(SlotPhase.DONE)

            with m.If(self.rerr.valid & (self.rerr.payload == k)):
                m.d.sync += rerr[k].eq(1)
            with m.If(self.st_done.valid & (sd.tag == k)):
                m.d.sync += [phase[k].eq(SlotPhase.STATUS),
                             status[k].eq(Mux(sd.error | rerr[k], IOERR, OK))]
            with m.If(self.decision.valid & (dec.slot == k)):
                with m.Switch(dec.action):
                    with m.Case(BlkAction.NO_STATUS):
                        m.d.sync += [phase[k].eq(SlotPhase.DONE), nostatus[k].eq(1)]
                    with m.Case(BlkAction.GET_ID):
                        m.d.sync += phase[k].eq(SlotPhase.GET_ID)
                    with m.Default():
                        m.d.sync += [phase[k].eq(SlotPhase.STATUS), status[k].eq(dec.status)]
            with m.If(js == k):
                with m.If(to_status):
                    m.d.sync += [phase[k].eq(SlotPhase.STATUS), status[k].eq(to_status_value)]
                with m.If(to_sent):
                    m.d.sync += phase[k].eq(SlotPhase.SENT)
                with m.If(to_free):
                    m.d.sync += phase[k].eq(SlotPhase.FREE)
            with m.If(self.alloc.valid & (self.alloc.payload == k)):
                m.d.sync += [phase[k].eq(SlotPhase.BUSY), status[k].eq(OK), rerr[k].eq(0),
                             werr[k].eq(0), serr[k].eq(0), nostatus[k].eq(0)]
        m.d.comb += [self.release.valid.eq(to_free), self.release.payload.eq(js)]

        m.d.comb += self.quiet.eq(sequencer.ongoing("IDLE") & ~owners.r_rdy & ~segs.r_rdy
                                  & ~rp.busy)
        return m
