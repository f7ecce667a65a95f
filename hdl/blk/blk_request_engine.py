"""The virtio-blk request engine: virtqueue elements in, storage commands and DMA out."""
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.blk.byte_repacker import ByteRepacker
from hdl.blk.element_collector import ElementCollector
from hdl.blk.layouts import desc_layout, slot_meta_layout
from hdl.blk.read_router import ReadRouter
from hdl.blk.request_back_end import RequestBackEnd
from hdl.blk.request_decoder import MAX_CAPACITY
from hdl.blk.request_front_end import RequestFrontEnd
from hdl.blk.storage_port import StorageSignature, beats_per_sector
from hdl.stream_fifo import queue_stream
from hdl.pcie.dma_port import MAX_DMA_LEN, ReadChannelSignature, WriteChannelSignature
from hdl.virtio.spec import VIRTIO_BLK_ID_BYTES
from hdl.virtio.virtqueue_port import VirtqElemDesc, VirtqElemDone

__all__ = ["BlkRequestEngine", "serial_bytes"]


def serial_bytes(serial: bytes | str) -> bytes:
    """The GET_ID data for ``serial``: ASCII without NUL, at most 20 bytes, NUL-padded to 20
    (virtio 1.2 §5.2.6)."""
    if isinstance(serial, str):
        serial = serial.encode("ascii")
    if len(serial) > VIRTIO_BLK_ID_BYTES or any(not 0 < b < 0x80 for b in serial):
        raise ValueError(f"serial {serial!r} is not an ASCII string of at most "
                         f"{VIRTIO_BLK_ID_BYTES} bytes without NUL (virtio 1.2 §5.2.6)")
    return serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")


def _power_of_two(name: str, value, low: int, high: int) -> None:
    if (not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high
            or value & (value - 1)):
        raise ValueError(f"{name} must be a power of two from {low} to {high}, not {value!r}")


class BlkRequestEngine(wiring.Component):
    """Serves virtio-blk requests (virtio 1.2 §5.2.6) from virtqueue elements.

    Each element (``elem``, from :class:`~hdl.virtio.virtqueue_engine.VirtqueueEngine`) is
    one request: header ``R[0:16]``, OUT data ``R[16:]``, IN / GET_ID data ``W[:-1]``,
    status the last byte of *W*, however the descriptors split them (*R*: the device-
    readable bytes, *W*: the device-writable ones). The engine serves VIRTIO_BLK_T_IN,
    T_OUT, T_FLUSH and T_GET_ID; every other type gets VIRTIO_BLK_S_UNSUPP; the checks
    and outcomes of ``docs/robustness.md`` apply (see
    :class:`~hdl.blk.request_decoder.RequestDecoder`); it writes nothing but the data and
    status bytes into device-writable buffers, and answers each element with one
    ``done`` whose ``written_len`` is the written prefix of *W* (§2.7.8.2).

    Up to ``max_requests`` requests are in flight, each in a slot whose number is its tag
    on the storage port, so the storage may finish them in any order and completions
    follow. Headers are read ahead; decisions and storage commands follow element order
    (so a FLUSH is issued after the WRITE of every earlier OUT, and completes, by the
    storage port's rule, after each of them is durable). OUT data streams from DMA reads
    into the storage, IN data from the storage into DMA writes, both re-aligned on the fly
    (:class:`~hdl.blk.byte_repacker.ByteRepacker`) whatever the descriptors' sizes and
    alignments.

    Blocks (one file each): :class:`~hdl.blk.element_collector.ElementCollector`,
    :class:`~hdl.blk.request_front_end.RequestFrontEnd`,
    :class:`~hdl.blk.read_router.ReadRouter`, a ByteRepacker for OUT data,
    :class:`~hdl.blk.request_back_end.RequestBackEnd`; a descriptor memory (``max_requests
    * max_descriptors`` entries) and a slot memory.

    Device reset: hold ``reset`` until ``idle``. The engine takes and drops element beats,
    starts nothing new, finishes what it has started on the DMA channels (every command
    offered is taken, a read's data taken, a write's data sent and its ``done`` awaited) and
    on the storage port (a WRITE's data all sent, every READ burst and ``done`` taken),
    completes nothing, and raises ``idle`` when nothing is outstanding; the clock after,
    every slot and queue is empty. Requests in flight are lost (the driver resubmits
    after a reset); an OUT whose storage WRITE was issued is written entirely, one that was
    not is not written at all. ``rst`` empties it at once (use it only with the storage and
    the DMA engine reset too).

    Parameters
    ----------
    seq_width : int
        The virtqueue engine's ``seq_width``.
    width : int
        DMA and storage data width, 64 or 128.
    capacity : int
        Disk size in 512-byte sectors, 1 to 2^23 - 1 (so every length fits 32 bits).
    serial : bytes or str
        The GET_ID string: ASCII, at most 20 bytes.
    max_requests : int
        Requests in flight (slots), a power of two from 2 to 64.
    max_descriptors : int
        Non-empty descriptors per request (a power of two from 4 to 256); a request with
        more gets IOERR. Advertise ``seg_max = max_descriptors - 2``.
    max_chunk : int
        Largest DMA command for data, a power of two from 64 to 65536.
    max_reads, max_writes : int
        DMA read / write commands outstanding at most (powers of two from 2 to 256).

    Attributes
    ----------
    elem : In(stream.Signature(VirtqElemDesc(seq_width)))
    done : Out(stream.Signature(VirtqElemDone(seq_width)))
    rd : Out(ReadChannelSignature(width))
        Header and OUT data reads.
    wr : Out(WriteChannelSignature(width))
        IN data, GET_ID data and status writes.
    storage : Out(StorageSignature(width=width, tag_width=log2(max_requests)))
    reset : In(1)
    idle : Out(1)
    needs_reset : Out(1)
        A status write failed (sticky until a reset).
    """

    def __init__(self, *, seq_width: int, width: int = 64, capacity: int,
                 serial: bytes | str = b"", max_requests: int = 16, max_descriptors: int = 16,
                 max_chunk: int = 4096, max_reads: int = 16, max_writes: int = 16):
        if not isinstance(seq_width, int) or seq_width < 1:
            raise ValueError(f"seq_width must be a positive integer, not {seq_width!r}")
        if width not in (64, 128):
            raise ValueError(f"width must be 64 or 128, not {width!r}")
        if not isinstance(capacity, int) or not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be 1 to {MAX_CAPACITY} sectors, not {capacity!r}")
        _power_of_two("max_requests", max_requests, 2, 64)
        _power_of_two("max_descriptors", max_descriptors, 4, 256)
        _power_of_two("max_chunk", max_chunk, 64, MAX_DMA_LEN)
        _power_of_two("max_reads", max_reads, 2, 256)
        _power_of_two("max_writes", max_writes, 2, 256)
        beats_per_sector(width)
        self.seq_width = seq_width
        self.width = width
        self.capacity = capacity
        self.serial = serial_bytes(serial)
        self.max_requests = max_requests
        self.max_descriptors = max_descriptors
        self.max_chunk = max_chunk
        self.max_reads = max_reads
        self.max_writes = max_writes
        self.tag_width = exact_log2(max_requests)
        super().__init__({
            "elem": In(stream.Signature(VirtqElemDesc(seq_width))),
            "done": Out(stream.Signature(VirtqElemDone(seq_width))),
            "rd": Out(ReadChannelSignature(width)),
            "wr": Out(WriteChannelSignature(width)),
            "storage": Out(StorageSignature(width=width, tag_width=self.tag_width)),
            "reset": In(1),
            "idle": Out(1),
            "needs_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        slots, d_max = self.max_requests, self.max_descriptors

        m.submodules.desc_mem = desc_mem = Memory(shape=desc_layout, depth=slots * d_max,
                                                  init=[])
        m.submodules.meta_mem = meta_mem = Memory(
            shape=slot_meta_layout(self.seq_width, d_max), depth=slots, init=[])

        m.submodules.collector = col = ElementCollector(
            seq_width=self.seq_width, slots=slots, max_descriptors=d_max)
        m.submodules.front = fe = RequestFrontEnd(
            slots=slots, max_descriptors=d_max, capacity=self.capacity,
            max_chunk=self.max_chunk)
        m.submodules.router = router = ReadRouter(width=self.width, slots=slots)
        m.submodules.packer = packer = ByteRepacker(width=self.width, len_width=32)
        m.submodules.back = be = RequestBackEnd(
            seq_width=self.seq_width, width=self.width, slots=slots, max_descriptors=d_max,
            serial=self.serial, max_chunk=self.max_chunk, max_writes=self.max_writes)

        wiring.connect(m, wiring.flipped(self.elem), col.elem)
        wiring.connect(m, col.desc_wr, desc_mem.write_port())
        wiring.connect(m, col.meta_wr, meta_mem.write_port())
        wiring.connect(m, fe.desc_rd, desc_mem.read_port())
        wiring.connect(m, be.desc_rd, desc_mem.read_port())
        wiring.connect(m, be.meta_rd, meta_mem.read_port())
        wiring.connect(m, col.request, fe.request)
        wiring.connect(m, col.alloc, be.alloc)
        wiring.connect(m, be.release, col.release)

        # DMA reads: the front end's commands, their kinds queued for the router.
        m.submodules.kinds = kinds = queue_stream(m, fe.kind, router.kind, depth=self.max_reads)
        wiring.connect(m, fe.dma_cmd, wiring.flipped(self.rd.cmd))
        wiring.connect(m, wiring.flipped(self.rd.data), router.dma)
        wiring.connect(m, router.header, fe.header)
        wiring.connect(m, router.rerr, be.rerr)
        wiring.connect(m, fe.decision, be.decision)

        # OUT data: router -> packer -> storage, cut at each WRITE's length.
        m.submodules.pack_segs = pack_segs = queue_stream(m, fe.pack_seg, packer.seg, depth=4)
        wiring.connect(m, router.data, packer.i)
        st = self.storage
        m.d.comb += [
            st.wr_data.valid.eq(packer.o.valid),
            st.wr_data.payload.data.eq(packer.o.payload.data),
            st.wr_data.payload.last.eq(packer.o.payload.last),
            packer.o.ready.eq(st.wr_data.ready),
        ]
        wiring.connect(m, fe.st_cmd, wiring.flipped(st.cmd))
        wiring.connect(m, wiring.flipped(st.rd_data), be.st_rd)
        wiring.connect(m, wiring.flipped(st.done), be.st_done)
        wiring.connect(m, be.wr, wiring.flipped(self.wr))
        wiring.connect(m, be.done, wiring.flipped(self.done))

        # Storage commands outstanding: a READ ends with its last beat, the others on done.
        outstanding = Signal(range(slots + 1))
        started = st.cmd.valid & st.cmd.ready
        ended = ((st.rd_data.valid & st.rd_data.ready & st.rd_data.payload.last)
                 + (st.done.valid & st.done.ready))
        m.d.sync += outstanding.eq(outstanding + started - ended)

        drained = Signal()
        m.d.comb += [
            drained.eq(fe.quiet & be.quiet & ~kinds.r_rdy & ~pack_segs.r_rdy & ~packer.busy
                       & (outstanding == 0)),
            self.idle.eq(self.reset & drained),
            col.reset.eq(self.reset),
            fe.reset.eq(self.reset),
            be.reset.eq(self.reset),
            self.needs_reset.eq(be.needs_reset),
        ]
        # Once drained under reset, everything is cleared (the memories need not be).
        return ResetInserter(self.idle)(m)
