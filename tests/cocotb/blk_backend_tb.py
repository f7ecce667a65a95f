"""cocotb testbench for the virtio-blk backend (through :mod:`sim.blk_harness`).

:class:`BlkTB` plays the virtqueue engine and the host: it builds virtio-blk requests in
host memory the way a driver does (header, data buffers scattered at random alignments and
cut at random places, zero-length descriptors here and there, the status byte alone or at
the end of the last data buffer), hands each as an element on the backend port, and serves
the backend's DMA channels from that memory with :class:`~sim.dma_port_model.DmaPortModel`
(random latency and back-pressure, injected failures). It judges the backend against the
golden model (:class:`sim.model.blk.BlkDeviceModel` over a golden :class:`Disk`):

* each completion (``done``) must be for an outstanding element, echo its ``head`` and give
  the model's ``written_len``; by then every DMA write of the request must have its
  ``done``, the device-writable buffers must hold what the model wrote (data, status) over
  the junk they started with, and the request's storage operation must be finished;
* every DMA write must lie inside a device-writable buffer of an outstanding request;
* the storage commands (seen on the harness's taps) must be the model's, in element order;
  a FLUSH's completion must come after the storage ``done`` of every earlier OUT;
* the disk, read back through the backend at the end, must equal the golden disk.

Requests in flight never overlap a write in flight (as a block layer keeps them), so the
model can execute each one when it is handed out. Everything random comes from one
``random.Random`` seeded from cocotb's seed (``SEED=`` replays).
"""
from __future__ import annotations

import json
import logging
import os
import random
from collections import deque
from dataclasses import dataclass, field

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from hdl.blk.storage_port import StorageOp, storage_cmd_layout, storage_done_layout, \
    storage_rd_layout
from hdl.pcie.dma_port import DmaError
from hdl.virtio.spec import VIRTIO_BLK_ID_BYTES, VirtioBlkStatus, VirtioBlkType
from hdl.virtio.virtqueue_port import VirtqElemDesc, VirtqElemDone
from sim.dma_port_model import DmaPortModel, FastSignal, LayoutCodec, Timing, WriteRecord
from sim.model.blk import BlkDeviceConfig, BlkDeviceModel, BlkOutcome, Disk, \
    encode_request_header
from sim.model.memory import SparseMemory
from sim.model.virtqueue import Descriptor

__all__ = ["BlkTB", "Request", "dut_params"]

log = logging.getLogger(__name__)

SECTOR = 512
BUF_BASE = 0x20_0000_0000
BUF_SPAN = 0x400_0000           # buffers are handed out round-robin from 64 MiB
IN, OUT, FLUSH, GET_ID = (VirtioBlkType.IN.value, VirtioBlkType.OUT.value,
                          VirtioBlkType.FLUSH.value, VirtioBlkType.GET_ID.value)
FAULTS = (DmaError.UR, DmaError.CA, DmaError.POISONED, DmaError.TIMEOUT)


def dut_params() -> dict:
    return json.loads(os.environ.get("DUT_PARAMS", "{}"))


def initial_disk(disk: dict) -> bytes:
    """The RAM disk's initial contents: random bytes from ``init_seed`` (the harness builds
    the same), or zeros."""
    size = disk["capacity"] * SECTOR
    if disk.get("init_seed") is None:
        return bytes(size)
    return random.Random(disk["init_seed"]).randbytes(size)


# The RAM disk keeps its contents from one cocotb test to the next (``rst`` does not clear
# memories): a test that ends cleanly leaves the golden image here for the next one; after
# a failed test the next one reads the disk back first.
_carried: dict = {"image": None, "clean": True}


class Violation(AssertionError):
    """The backend did something the model says it must not."""


@dataclass
class Request:
    queue: int
    seq: int
    head: int
    descs: list[Descriptor]
    readable: bytes
    w_len: int
    outcome: BlkOutcome
    label: str
    w_init: bytes
    storage: tuple | None                   # expected (op, sector, count)
    effect: tuple[int, int] | None = None   # sectors a successful OUT changes (start, count)
    old: bytes = b""                        # their contents before
    fault: str | None = None                # injected DMA failure: header, data, status
    index: int = 0                          # position in element order
    writes: list[WriteRecord] = field(default_factory=list)
    storage_done: bool = False
    storage_seen: bool = False
    expect_needs_reset: bool = False

    @property
    def writable(self) -> list[Descriptor]:
        return [d for d in self.descs if d.write]

    @property
    def span(self) -> tuple[int, int] | None:
        """Sectors this request reads or writes on the disk (for the overlap rule)."""
        if self.storage and self.storage[0] != StorageOp.FLUSH:
            return self.storage[1], self.storage[2]
        return None


class BlkTB:
    """The backend under test, its host memory, its golden model and its checkers."""

    def __init__(self, dut, *, seed: int | None = None):
        self.dut = dut
        params = dut_params()
        be, disk = params["backend"], params["disk"]
        self.seq_width = be["seq_width"]
        self.width = be.get("width", 64)
        self.max_descriptors = be.get("max_descriptors", 16)
        self.max_requests = be.get("max_requests", 16)
        self.num_queues = be.get("num_queues", 1)
        self.serial = be["serial"]
        self.size_max = be.get("size_max", 65536)
        self.capacity = disk["capacity"]
        self.tag_width = (self.max_requests - 1).bit_length()
        seed = cocotb.RANDOM_SEED if seed is None else seed
        self.rng = random.Random(seed)
        self.mem = SparseMemory()
        self.disk = Disk(self.capacity, _carried["image"] or initial_disk(disk))
        self.model = BlkDeviceModel(self.disk, serial=self.serial)
        self.unknown: set[int] = set()      # sectors whose contents the tests gave up on

        self.dma = DmaPortModel(dut.clk, self.mem, rng=self.rng, width=self.width)
        self.dma.add_read_channel(dut, "rd__0")
        self.dma.add_write_channel(dut, "wr__0")
        self.dma.write_hooks.append(self._on_write)
        self.dma.cycle_hooks.append(self._step)
        self.dma.error_for = self._error_for
        self.faults: list[tuple[str, int, int, DmaError]] = []   # (kind, lo, hi, error)

        names = ["elem__valid", "elem__payload", "elem__ready", "done__valid",
                 "done__payload", "done__ready", "reset", "idle", "needs_reset",
                 "st_cmd_mon__valid", "st_cmd_mon__payload", "st_cmd_offer",
                 "st_done_mon__valid",
                 "st_done_mon__payload", "st_rd_mon__valid", "st_rd_mon__payload",
                 "rd__0__cmd__valid", "wr__0__cmd__valid", "config_changed"]
        self.sig = {name: FastSignal(getattr(dut, name)) for name in names}
        self.elem_codec = LayoutCodec(VirtqElemDesc(self.seq_width))
        self.done_codec = LayoutCodec(VirtqElemDone(self.seq_width))
        self.st_cmd_codec = LayoutCodec(storage_cmd_layout(self.tag_width))
        self.st_done_codec = LayoutCodec(storage_done_layout(self.tag_width))
        self.st_rd_codec = LayoutCodec(storage_rd_layout(self.width, self.tag_width))

        self.buf_next = BUF_BASE
        self.beats: deque[int] = deque()        # packed elem beats still to hand out
        self.elem_valid = False
        self.mid_element = False                # beats of an element handed out, not its last
        self.elem_p = 0.9                       # probability of offering a beat
        self.done_ready = False
        self.done_p = 0.9
        self.seq = [0] * self.num_queues
        self.head = 0
        self.outstanding: dict[tuple[int, int], Request] = {}
        self.submitted = 0
        self.completed: list[Request] = []
        self.expected_storage: deque[Request] = deque()
        self.tag_owner: dict[int, Request] = {}
        self.in_reset = False
        self.cmd_held = False       # a storage command offered since before a reset rose
        self.out_of_order = 0
        self.last_index = -1
        self.zero_sector_turn = 0

    # --- setup -----------------------------------------------------------------------------
    async def start(self) -> None:
        cocotb.start_soon(Clock(self.dut.clk, 8, unit="ns").start())
        for name in ("elem__valid", "done__ready", "reset"):
            self.sig[name].set(0)
        self.dut.features.value = 0
        self.dut.cfg__valid.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        cocotb.start_soon(self.dma.run())
        await ClockCycles(self.dut.clk, 2)
        if not _carried["clean"]:
            # Learn the disk as it is (nothing to compare with: every sector unknown).
            self.unknown = set(range(self.capacity))
            self.disk.write(0, await self.read_back())
            self.unknown.clear()
        _carried["clean"] = False

    def finish(self) -> None:
        """The test passed: the next one starts from this golden disk."""
        if not self.unknown:
            _carried.update(image=self.disk.image(), clean=True)

    # --- building requests -------------------------------------------------------------------
    def _alloc(self, length: int) -> int:
        align = self.rng.choice([1, 1, 2, 4, 8, 16, 64, 512, 4096])
        addr = self.buf_next + self.rng.randrange(64)
        addr = (addr + align - 1) // align * align
        if addr + length > BUF_BASE + BUF_SPAN:
            addr = BUF_BASE + self.rng.randrange(64)
        self.buf_next = addr + max(length, 1)
        return addr

    def _cut(self, total: int, pieces: int, zero: float = 0.1) -> list[int]:
        """``total`` bytes in ``pieces`` parts cut at random places (zero-length parts now
        and then when ``zero`` allows)."""
        if pieces <= 1 or total == 0:
            return [total]
        points = sorted(self.rng.randint(0, total) for _ in range(pieces - 1))
        if self.rng.random() >= zero:
            points = sorted({p for p in points if 0 < p < total})
        cuts = [b - a for a, b in zip([0] + points, points + [total])]
        return [c for c in cuts if c or self.rng.random() < zero] or [total]

    def shape(self, r_len: int, w_len: int, *, style: str | None = None,
              data_segments: int | None = None) -> tuple[list[int], list[int]]:
        """Descriptor lengths for R and W the way drivers lay requests out."""
        rng = self.rng
        style = style or rng.choice(["linux", "linux", "linux", "merged", "random"])
        nseg = data_segments or rng.choice([1, 1, 1, 2, 3, 5])
        if style == "linux":
            # Header alone, data in page-like segments, status alone.
            r = [min(16, r_len)] + (self._cut(r_len - 16, nseg, 0) if r_len > 16 else [])
            w = (self._cut(w_len - 1, nseg, 0) if w_len > 1 else []) + ([1] if w_len else [])
        elif style == "merged":
            # Header and data in one buffer, data and status in one.
            r = [r_len] if r_len else []
            w = [w_len] if w_len else []
        else:
            r = self._cut(r_len, rng.randint(1, 4)) if r_len else []
            w = self._cut(w_len, rng.randint(1, 4)) if w_len else []
        return r, w

    def build(self, label: str, readable: bytes, w_len: int, *, style: str | None = None,
              r_cuts: list[int] | None = None, w_cuts: list[int] | None = None,
              queue: int | None = None, fault: str | None = None,
              data_segments: int | None = None) -> Request:
        """Place a request in memory and compute what the model says of it."""
        rng = self.rng
        if r_cuts is None or w_cuts is None:
            r, w = self.shape(len(readable), w_len, style=style, data_segments=data_segments)
            r_cuts = r if r_cuts is None else r_cuts
            w_cuts = w if w_cuts is None else w_cuts
        assert sum(r_cuts) == len(readable) and sum(w_cuts) == w_len
        descs = []
        pos = 0
        for n in r_cuts:
            addr = self._alloc(n)
            self.mem.write(addr, readable[pos:pos + n])
            descs.append(Descriptor(addr, n, False))
            pos += n
        w_init = rng.randbytes(w_len)
        pos = 0
        for n in w_cuts:
            addr = self._alloc(n)
            self.mem.write(addr, w_init[pos:pos + n])
            descs.append(Descriptor(addr, n, True))
            pos += n
        nonempty = sum(1 for d in descs if d.len)
        header = readable[:16] if len(readable) >= 16 else None
        too_many = nonempty > self.max_descriptors
        old = b""
        if header and int.from_bytes(header[0:4], "little") == OUT:
            # What an OUT would overwrite, kept in case it has to be undone.
            sector = int.from_bytes(header[8:16], "little")
            count = (len(readable) - 16) // SECTOR
            if sector + count <= self.capacity:
                old = self.disk.read(sector, count)
        if w_len and too_many:
            outcome = BlkOutcome(VirtioBlkStatus.IOERR, b"", w_len, 1 if w_len == 1 else 0,
                                 "more descriptors than the backend stores")
        else:
            outcome = self.model.handle(readable, w_len)
        storage = None
        if outcome.status is VirtioBlkStatus.OK and header is not None:
            type_ = int.from_bytes(header[0:4], "little")
            sector = int.from_bytes(header[8:16], "little")
            if type_ == IN and w_len > 1:
                storage = (StorageOp.READ, sector, (w_len - 1) // SECTOR)
            elif type_ == OUT and len(readable) > 16:
                storage = (StorageOp.WRITE, sector, (len(readable) - 16) // SECTOR)
            elif type_ == FLUSH:
                storage = (StorageOp.FLUSH, 0, 0)
        q = rng.randrange(self.num_queues) if queue is None else queue
        req = Request(q, self.seq[q], self.head, descs, readable, w_len, outcome, label,
                      w_init, storage)
        if storage and storage[0] == StorageOp.WRITE:
            req.effect = (storage[1], storage[2])
            req.old = old
        if fault:
            self._inject(req, fault)
        self.seq[q] = (self.seq[q] + 1) % (1 << self.seq_width)
        self.head = (self.head + 1) & 0xFFFF
        return req

    def request(self, type_: int, *, sector: int = 0, data: bytes | int = 0,
                w_data: int | None = None, reserved: int | None = None, **kw) -> Request:
        """A request of ``type_``: OUT data given as bytes (or a length: random bytes), IN
        data as a length (``w_data``); the status byte is added to W."""
        rng = self.rng
        if isinstance(data, int):
            data = rng.randbytes(data)
        header = encode_request_header(type_, sector, rng.randrange(1 << 32)
                                       if reserved is None else reserved)
        w_len = (w_data or 0) + 1
        return self.build(kw.pop("label", f"type {type_}"), header + data, w_len, **kw)

    def random_request(self, sizes=(512, 4096), bad: float = 0.0) -> Request:
        """A well-formed IN / OUT / FLUSH / GET_ID of one of ``sizes`` bytes; with probability
        ``bad`` one of the error cases instead."""
        rng = self.rng
        if rng.random() < bad:
            return self.bad_request(rng.choice(self.BAD_KINDS))
        kind = rng.choices([IN, OUT, FLUSH, GET_ID], [40, 40, 8, 6])[0]
        if kind in (IN, OUT):
            size = rng.choice(sizes)
            count = size // SECTOR
            sector = rng.randrange(self.capacity - count + 1)
            if kind == IN:
                return self.request(IN, sector=sector, w_data=size, label="IN")
            return self.request(OUT, sector=sector, data=size, label="OUT")
        if kind == FLUSH:
            return self.request(FLUSH, label="FLUSH")
        return self.request(GET_ID, w_data=VIRTIO_BLK_ID_BYTES, label="GET_ID")

    BAD_KINDS = ("no_status", "short_header", "header_writable", "unsupported",
                 "in_with_readable", "out_with_writable", "flush_with_data", "get_id_len",
                 "get_id_readable", "range", "range_wrap", "length", "too_many",
                 "zero_sectors", "zero_length_descs")

    def bad_request(self, kind: str) -> Request:
        """One request of each malformed or failing kind of docs/robustness.md."""
        rng = self.rng
        cap = self.capacity
        if kind == "no_status":
            # Only device-readable bytes: nowhere to put a status.
            header = encode_request_header(rng.choice([IN, OUT]), 0)
            return self.build(kind, header + rng.randbytes(rng.choice([0, 512])), 0)
        if kind == "short_header":
            return self.build(kind, rng.randbytes(rng.randint(0, 15)), rng.choice([1, 513]))
        if kind == "header_writable":
            # The header in a device-writable buffer: R is empty.
            return self.build(kind, b"", 16 + rng.choice([1, 513]),
                              r_cuts=[], w_cuts=None)
        if kind == "unsupported":
            t = rng.choice([5, 2, 10, 11, 13, 14, 0xFFFF_FFFF, rng.randrange(16, 1 << 32)])
            return self.request(t, sector=rng.randrange(1 << 64), data=rng.choice([0, 512]),
                                w_data=rng.choice([0, 0, 512]), label=kind)
        if kind == "in_with_readable":
            return self.request(IN, sector=0, data=512, w_data=512, label=kind)
        if kind == "out_with_writable":
            return self.request(OUT, sector=0, data=512, w_data=512, label=kind)
        if kind == "flush_with_data":
            if rng.random() < 0.5:
                return self.request(FLUSH, data=512, label=kind)
            return self.request(FLUSH, w_data=512, label=kind)
        if kind == "get_id_len":
            return self.request(GET_ID, w_data=rng.choice([0, 19, 21, 512]), label=kind)
        if kind == "get_id_readable":
            return self.request(GET_ID, data=rng.choice([1, 512]), w_data=VIRTIO_BLK_ID_BYTES,
                                label=kind)
        if kind == "range":
            count = rng.choice([1, 2, 8])
            sector = rng.choice([cap, cap - count + 1, cap + 100])
            if rng.random() < 0.5:
                return self.request(IN, sector=sector, w_data=count * SECTOR, label=kind)
            return self.request(OUT, sector=sector, data=count * SECTOR, label=kind)
        if kind == "range_wrap":
            # sector + count wraps a 64-bit adder into range: must still fail.
            count = 8
            sector = (1 << 64) - rng.randint(1, count)
            return self.request(rng.choice([IN, OUT]), sector=sector,
                                **({"w_data": count * SECTOR} if rng.random() < 0.5 else
                                   {"data": count * SECTOR}), label=kind)
        if kind == "length":
            length = rng.choice([1, 100, 511, 513, 1000, 4095])
            if rng.random() < 0.5:
                return self.request(IN, sector=0, w_data=length, label=kind)
            return self.request(OUT, sector=0, data=length, label=kind)
        if kind == "too_many":
            # More non-empty descriptors than the backend stores: IOERR.
            n = self.max_descriptors + rng.randint(0, 3)
            size = 4096
            r = [16]
            w = [size // (n - 1)] * (n - 2) + [size - (size // (n - 1)) * (n - 2), 1]
            return self.request(IN, sector=0, w_data=size, r_cuts=r, w_cuts=w, label=kind)
        if kind == "zero_sectors":
            # In turn inside (OK), at the end (OK: nothing past it) and past it (IOERR), so
            # that a few of them cover both outcomes whatever the seed.
            self.zero_sector_turn += 1
            sector = (rng.randrange(cap + 1), cap, cap + 1 + rng.randrange(1 << 20))[
                self.zero_sector_turn % 3]
            return self.request(rng.choice([IN, OUT]), sector=sector, label=kind)
        if kind == "zero_length_descs":
            # Valid requests with empty descriptors in between: served normally.
            size = rng.choice([512, 4096])
            sector = rng.randrange(cap - size // SECTOR + 1)
            if rng.random() < 0.5:
                data = rng.randbytes(size)
                r = [0, 10, 0, 6, 0] + [size // 2, 0, size - size // 2]
                return self.request(OUT, sector=sector, data=data, r_cuts=r, w_cuts=[0, 1, 0],
                                    label=kind)
            w = [0, 100, 0, size - 100, 0, 1, 0]
            return self.request(IN, sector=sector, w_data=size, r_cuts=[0, 16, 0], w_cuts=w,
                                label=kind)
        raise ValueError(kind)

    # --- DMA failures -------------------------------------------------------------------
    def _inject(self, req: Request, fault: str) -> None:
        """Make one DMA command of ``req`` fail and change what is expected of it."""
        rng = self.rng
        error = rng.choice(FAULTS)
        readable = [d for d in req.descs if not d.write and d.len]
        writable = [d for d in req.writable if d.len]
        w_len = req.w_len
        if fault == "header":
            offset = rng.randrange(16)
            kind, addr = "read", self._stream_addr(readable, offset)
        elif fault == "data":
            if req.storage and req.storage[0] == StorageOp.WRITE:
                offset = rng.randrange(16, len(req.readable))
                kind, addr = "read", self._stream_addr(readable, offset)
            else:
                offset = rng.randrange(w_len - 1)
                kind, addr = "write", self._stream_addr(writable, offset)
        elif fault == "status":
            kind, addr = "write", self._stream_addr(writable, w_len - 1)
            req.expect_needs_reset = True
        else:
            raise ValueError(fault)
        self.faults.append((kind, addr, addr + 1, error))
        req.fault = fault
        if fault == "header":
            # Nothing is known: IOERR, no storage operation.
            if req.effect:
                self.disk.write(req.effect[0], req.old)
            req.storage = req.effect = None
        if fault in ("header", "data"):
            req.outcome = BlkOutcome(VirtioBlkStatus.IOERR, b"", w_len,
                                     1 if w_len == 1 else 0, f"injected {fault} {error.name}")
        if fault == "data" and req.effect:
            # The WRITE went ahead with zeros in place of the failed bytes.
            self.disk.write(req.effect[0], req.old)
        if fault == "status":
            req.outcome = BlkOutcome(req.outcome.status, req.outcome.data, w_len, 0,
                                     "status write failed")

    @staticmethod
    def can_fault(req: Request, fault: str) -> bool:
        """Whether ``req`` issues the DMA command ``fault`` names."""
        if req.outcome.status is None or req.label == "too_many":
            return False
        if fault == "header":
            return len(req.readable) >= 16
        if fault == "data":
            return (req.storage is not None and req.storage[0] != StorageOp.FLUSH) or (
                req.label == "GET_ID" and req.outcome.status is VirtioBlkStatus.OK)
        return True

    @staticmethod
    def _stream_addr(descs: list[Descriptor], offset: int) -> int:
        for d in descs:
            if offset < d.len:
                return d.addr + offset
            offset -= d.len
        raise ValueError("offset past the buffers")

    def _error_for(self, channel: str, kind: str, addr: int, length: int) -> DmaError:
        for k, lo, hi, error in self.faults:
            if k == kind and addr < hi and lo < addr + length:
                return error
        return DmaError.NONE

    # --- handing requests out ------------------------------------------------------------
    def overlaps(self, req: Request) -> bool:
        """Whether ``req`` touches sectors a request in flight writes, or writes sectors
        one in flight touches."""
        span = req.span
        if span is None:
            return False
        for other in self.outstanding.values():
            o = other.span
            if o is None or not (req.effect or other.effect):
                continue
            if span[0] < o[0] + o[1] and o[0] < span[0] + span[1]:
                return True
        return False

    def submit(self, req: Request) -> None:
        key = (req.queue, req.seq)
        assert key not in self.outstanding, f"seq {key} reused while outstanding"
        req.index = self.submitted
        self.submitted += 1
        self.outstanding[key] = req
        if req.effect:
            sectors = range(req.effect[0], req.effect[0] + req.effect[1])
            if req.fault == "data":
                self.unknown.update(sectors)
            else:
                self.unknown.difference_update(sectors)
        if req.storage:
            self.expected_storage.append(req)
        descs = [d for d in req.descs if not d.write] + req.writable
        for k, d in enumerate(descs):
            self.beats.append(self.elem_codec.pack({
                "queue": req.queue, "seq": req.seq, "head": req.head, "addr": d.addr,
                "len": d.len, "write": int(d.write), "last": int(k == len(descs) - 1)}))

    def try_submit(self, req: Request) -> bool:
        """Hand ``req`` out unless it overlaps a request in flight (then forget it)."""
        if self.overlaps(req):
            self.unsubmit(req)
            return False
        self.submit(req)
        return True

    def unsubmit(self, req: Request) -> None:
        """Take back a request built but not handed out (it overlapped one in flight)."""
        if req.effect:
            self.disk.write(req.effect[0], req.old)
        self.faults = [f for f in self.faults
                       if not any(d.addr <= f[1] < d.addr + d.len for d in req.descs)]
        self.seq[req.queue] = (self.seq[req.queue] - 1) % (1 << self.seq_width)

    # --- per-cycle checks ----------------------------------------------------------------
    def _step(self, cycle: int) -> None:
        sig = self.sig
        if self.elem_valid and sig["elem__ready"].get():
            self.mid_element = not self.elem_codec.unpack(self.beats.popleft())["last"]
        self.elem_valid = bool(self.beats) and (
            self.elem_p >= 1 or self.rng.random() < self.elem_p)
        if self.elem_valid:
            sig["elem__payload"].set(self.beats[0])
        sig["elem__valid"].set(int(self.elem_valid))

        if self.done_ready and sig["done__valid"].get():
            self._completed(self.done_codec.unpack(sig["done__payload"].get()))
        self.done_ready = self.done_p >= 1 or self.rng.random() < self.done_p
        sig["done__ready"].set(int(self.done_ready))
        if self.in_reset and sig["done__valid"].get():
            raise Violation("a completion was offered during a device reset")

        # The values read here are those of the clock that just ended, ``reset`` included.
        under_reset = sig["reset"].get()
        taken = sig["st_cmd_mon__valid"].get()
        if taken:
            self._storage_cmd(self.st_cmd_codec.unpack(sig["st_cmd_mon__payload"].get()),
                              under_reset)
        self.cmd_held = bool(sig["st_cmd_offer"].get() and not taken
                             and (not under_reset or self.cmd_held))
        if sig["st_done_mon__valid"].get():
            done = self.st_done_codec.unpack(sig["st_done_mon__payload"].get())
            self._storage_end(done["tag"], done["error"])
        if sig["st_rd_mon__valid"].get():
            beat = self.st_rd_codec.unpack(sig["st_rd_mon__payload"].get())
            self._storage_end(beat["tag"], beat["error"])

    def _storage_cmd(self, cmd: dict, under_reset: bool) -> None:
        # Under reset only a command offered before the reset rose may still be taken
        # (a stream offer cannot be withdrawn); nothing new may be offered.
        if under_reset and not self.cmd_held:
            raise Violation(f"storage command {cmd} first offered during a device reset")
        if not self.expected_storage:
            raise Violation(f"storage command {cmd} that no request needs")
        req = self.expected_storage.popleft()
        op, sector, count = req.storage
        got = (StorageOp(cmd["op"]), cmd["sector"], cmd["count"])
        want = (op, sector, count)
        if got != want:
            raise Violation(f"request {req.index} ({req.label}): storage command {got}, "
                            f"expected {want}")
        if cmd["tag"] in self.tag_owner:
            raise Violation(f"storage tag {cmd['tag']} reused while outstanding")
        self.tag_owner[cmd["tag"]] = req
        req.storage_seen = True

    def _storage_end(self, tag: int, error: int) -> None:
        req = self.tag_owner.pop(tag, None)
        if req is None:
            raise Violation(f"storage completion for tag {tag}, which is not outstanding")
        if error:
            raise Violation("the RAM disk reported an error")
        req.storage_done = True

    def _on_write(self, record: WriteRecord) -> None:
        end = record.addr + len(record.data)
        for req in self.outstanding.values():
            for d in req.writable:
                if d.addr <= record.addr and end <= d.addr + d.len:
                    req.writes.append(record)
                    return
        raise Violation(f"DMA write of {len(record.data)} bytes at {record.addr:#x} is not "
                        f"inside a device-writable buffer of a request in flight")

    def _completed(self, done: dict) -> None:
        key = (done["queue"], done["seq"])
        req = self.outstanding.pop(key, None)
        if req is None:
            raise Violation(f"completion for queue {key[0]} seq {key[1]}, not in flight")
        where = f"request {req.index} ({req.label}, fault {req.fault})"
        if done["head"] != req.head:
            raise Violation(f"{where}: head {done['head']}, expected {req.head}")
        if done["written_len"] != req.outcome.written_len:
            raise Violation(f"{where}: written_len {done['written_len']}, expected "
                            f"{req.outcome.written_len} (status {req.outcome.status}, "
                            f"W {req.w_len})")
        for record in req.writes:
            if record.done_cycle is None:
                raise Violation(f"{where}: completed before its DMA write at "
                                f"{record.addr:#x} was done")
        if req.storage and not req.storage_done:
            raise Violation(f"{where}: completed before its storage {req.storage[0].name}")
        if req.storage and req.storage[0] == StorageOp.FLUSH:
            for other in self.outstanding_before(req):
                if other.storage and other.storage[0] == StorageOp.WRITE \
                        and not other.storage_done:
                    raise Violation(f"{where}: FLUSH completed before the WRITE of earlier "
                                    f"request {other.index}")
        self._check_memory(req, where)
        if req.index < self.last_index:
            self.out_of_order += 1
        self.last_index = max(self.last_index, req.index)
        self.faults = [f for f in self.faults
                       if not any(d.addr <= f[1] < d.addr + d.len for d in req.descs)]
        self.completed.append(req)

    def outstanding_before(self, req: Request) -> list[Request]:
        return [r for r in self.outstanding.values() if r.index < req.index]

    def _check_memory(self, req: Request, where: str) -> None:
        expected = bytearray(req.w_init)
        if req.fault is None:
            for offset, data in req.outcome.writable_writes():
                expected[offset:offset + len(data)] = data
        got = b"".join(self.mem.read(d.addr, d.len) for d in req.writable)
        if req.storage and req.storage[0] == StorageOp.READ:
            # Sectors the tests gave up on (a failed OUT) may read as anything.
            start = req.storage[1]
            for s in range(start, start + req.storage[2]):
                if s in self.unknown:
                    k = (s - start) * SECTOR
                    expected[k:k + SECTOR] = got[k:k + SECTOR]
        readable = b"".join(self.mem.read(d.addr, d.len) for d in req.descs if not d.write)
        if readable != req.readable:
            raise Violation(f"{where}: a device-readable buffer changed")
        if req.fault is None:
            if got != bytes(expected):
                diff = next(k for k in range(len(got)) if got[k] != expected[k])
                raise Violation(f"{where}: device-writable bytes differ from the model's at "
                                f"offset {diff} of {len(got)}")
            return
        # A failed DMA command leaves its bytes unknown; the status byte is still checked.
        status = got[-1]
        if req.fault == "status":
            if status != req.w_init[-1]:
                raise Violation(f"{where}: the status byte changed although its write failed")
        elif status != VirtioBlkStatus.IOERR.value:
            raise Violation(f"{where}: status {status}, expected IOERR after a DMA failure")

    # --- running -------------------------------------------------------------------------
    async def wait(self, cond, limit: int, what: str) -> None:
        for _ in range(limit):
            if cond():
                return
            await RisingEdge(self.dut.clk)
        raise Violation(f"timeout after {limit} cycles waiting for {what}")

    async def drain(self, limit: int = 400_000) -> None:
        """Wait until every request handed out has completed."""
        await self.wait(lambda: not self.outstanding and not self.beats, limit,
                        f"{len(self.outstanding)} requests to complete")

    async def run_traffic(self, count: int, *, depth: int, sizes=(512, 4096),
                          bad: float = 0.0, faults: float = 0.0, stop=None) -> None:
        """Hand out ``count`` random requests keeping ``depth`` in flight."""
        rng = self.rng
        handed = 0
        while handed < count:
            if stop is not None and stop():
                return
            if len(self.outstanding) < depth and len(self.beats) < 64:
                fault = None
                if rng.random() < faults:
                    fault = rng.choice(["header", "data", "status"])
                req = self.random_request(sizes, bad)
                if fault and not self.can_fault(req, fault):
                    fault = None
                if fault:
                    self._inject(req, fault)
                if self.overlaps(req):
                    self.unsubmit(req)
                else:
                    self.submit(req)
                    handed += 1
                    continue
            await RisingEdge(self.dut.clk)

    async def read_back(self, start: int = 0, count: int | None = None,
                        chunk: int = 32) -> bytes:
        """Read sectors through the backend (IN requests) and return their bytes."""
        count = self.capacity - start if count is None else count
        reqs = []
        for sector in range(start, start + count, chunk):
            n = min(chunk, start + count - sector)
            while len(self.outstanding) >= self.max_requests:
                await RisingEdge(self.dut.clk)
            req = self.request(IN, sector=sector, w_data=n * SECTOR, style="linux",
                               label="read back")
            self.submit(req)
            reqs.append(req)
        await self.drain()
        data = b""
        for req in reqs:
            d = req.writable
            data += b"".join(self.mem.read(x.addr, x.len) for x in d)[:-1]
        return data

    async def verify_disk(self) -> None:
        """The whole disk, read through the backend, equals the golden disk (sectors given
        up on excepted)."""
        image = await self.read_back()
        golden = self.disk.image()
        for s in range(self.capacity):
            if s in self.unknown:
                continue
            if image[s * SECTOR:(s + 1) * SECTOR] != golden[s * SECTOR:(s + 1) * SECTOR]:
                raise Violation(f"sector {s} differs from the golden disk")

    async def device_reset(self) -> list[Request]:
        """A device reset: hold ``reset`` until ``idle`` (the rest of an element being handed
        out is still handed out); return the requests it dropped."""
        # Finish the element whose beats have started (as the virtqueue engine does), hand
        # out nothing after it. A beat on offer has started its element too: a stream does
        # not take back ``valid``, and the backend may take that beat in this very clock.
        keep = 0
        if self.mid_element or self.elem_valid:
            keep = next(k + 1 for k, beat in enumerate(self.beats)
                        if self.elem_codec.unpack(beat)["last"])
        while len(self.beats) > keep:
            self.beats.pop()
        self.in_reset = True
        self.sig["reset"].set(1)
        await self.wait(lambda: self.sig["idle"].get(), 200_000, "idle under reset")
        if self.dma.busy():
            raise Violation("idle while DMA commands are outstanding")
        if self.sig["rd__0__cmd__valid"].get() or self.sig["wr__0__cmd__valid"].get():
            raise Violation("a DMA command is offered at idle")
        if self.beats:
            raise Violation("idle before the element being handed out was taken")
        if self.tag_owner:
            raise Violation(f"idle with storage commands outstanding: {self.tag_owner}")
        await RisingEdge(self.dut.clk)
        self.sig["reset"].set(0)
        self.in_reset = False
        lost = sorted(self.outstanding.values(), key=lambda r: r.index)
        self.outstanding.clear()
        self.expected_storage.clear()
        self.faults.clear()
        await RisingEdge(self.dut.clk)
        if self.sig["needs_reset"].get():
            raise Violation("needs_reset still set after a reset")
        return lost

    async def settle_lost_writes(self, lost: list[Request]) -> None:
        """An OUT dropped by a reset is written entirely or not at all: read each back,
        check that, and make the golden disk agree."""
        for req in lost:
            if not req.effect or req.fault == "data":
                # (an OUT whose data read failed left its sectors unknown already)
                continue
            sector, count = req.effect
            new = self.disk.read(sector, count)
            # Old or new: the read back must not be judged against the golden disk yet.
            sectors = set(range(sector, sector + count)) - self.unknown
            self.unknown |= sectors
            got = await self.read_back(sector, count)
            self.unknown -= sectors
            if got == new:
                continue
            if got != req.old:
                raise Violation(f"OUT {req.index} dropped by a reset left sectors {sector}.."
                                f"{sector + count - 1} neither old nor new")
            self.disk.write(sector, req.old)

    # --- configuration window ---------------------------------------------------------------
    async def cfg_access(self, addr: int, *, write: bool = False, data: int = 0,
                         be: int = 0xF) -> int:
        dut = self.dut
        dut.cfg__addr.value = addr
        dut.cfg__write.value = int(write)
        dut.cfg__w_data.value = data
        dut.cfg__be.value = be
        dut.cfg__valid.value = 1
        while True:
            await RisingEdge(dut.clk)
            if int(dut.cfg__ack.value):
                value = int(dut.cfg__r_data.value)
                break
        dut.cfg__valid.value = 0
        return value

    def expected_config(self) -> bytes:
        return BlkDeviceConfig(capacity=self.capacity, size_max=self.size_max,
                               seg_max=self.max_descriptors - 2, blk_size=512,
                               num_queues=self.num_queues).encode()


# --- scenarios ---------------------------------------------------------------------------

async def _tb(dut, **kw) -> BlkTB:
    tb = BlkTB(dut, **kw)
    await tb.start()
    return tb


@cocotb.test()
async def smoke(dut):
    """One request of each served type, and the device configuration."""
    tb = await _tb(dut)
    for req in (tb.request(OUT, sector=3, data=512, label="OUT"),
                tb.request(IN, sector=3, w_data=512, label="IN"),
                tb.request(IN, sector=100, w_data=4096, label="IN initial"),
                tb.request(FLUSH, label="FLUSH"),
                tb.request(GET_ID, w_data=VIRTIO_BLK_ID_BYTES, label="GET_ID"),
                tb.request(13, label="WRITE_ZEROES")):
        tb.submit(req)
        await tb.drain()
    statuses = [r.outcome.status for r in tb.completed]
    assert statuses == [VirtioBlkStatus.OK] * 5 + [VirtioBlkStatus.UNSUPP], statuses
    got_id = b"".join(tb.mem.read(d.addr, d.len) for d in tb.completed[4].writable)[:20]
    assert got_id == tb.serial.encode().ljust(20, b"\0"), got_id
    tb.finish()


@cocotb.test()
async def config_space(dut):
    """The device configuration window reads as the model's encoding; writes change
    nothing; addresses past the structure read 0; the configuration never changes."""
    tb = await _tb(dut)
    image = tb.expected_config()
    words = [int.from_bytes(image[k:k + 4], "little") for k in range(0, len(image), 4)]
    got = [await tb.cfg_access(dw) for dw in range(len(words) + 4)]
    assert got == words + [0] * 4, [hex(w) for w in got]
    for dw in range(len(words)):
        await tb.cfg_access(dw, write=True, data=tb.rng.randrange(1 << 32),
                            be=tb.rng.randrange(1, 16))
    again = [await tb.cfg_access(dw) for dw in range(len(words))]
    assert again == words
    assert not int(dut.config_changed.value)
    tb.finish()


def _random_timing(tb: BlkTB) -> None:
    """Random DMA latency and back-pressure on every stream, different per channel."""
    rng = tb.rng
    for name in ("rd__0", "wr__0"):
        low = rng.randint(1, 20)
        tb.dma.set_timing(Timing(latency=(low, low + rng.randint(0, 60)),
                                 cmd_ready=rng.uniform(0.4, 1.0),
                                 data_valid=rng.uniform(0.5, 1.0),
                                 data_ready=rng.uniform(0.5, 1.0),
                                 max_outstanding=rng.choice([1, 4, 16])), name)
    tb.elem_p = rng.uniform(0.5, 1.0)
    tb.done_p = rng.uniform(0.5, 1.0)


@cocotb.test()
async def random_mix(dut):
    """Random IN / OUT / FLUSH / GET_ID of 512 B to 8 KiB, a few bad ones, up to 16 in
    flight, scattered buffers, random DMA timing; completions come back out of order;
    the disk read back at the end equals the golden disk."""
    tb = await _tb(dut)
    for phase in range(3):
        _random_timing(tb)
        await tb.run_traffic(120, depth=tb.rng.choice([4, 16, 16]),
                             sizes=(512, 512, 1024, 4096, 4096, 8192), bad=0.08)
        await tb.drain()
    log.info("%d requests, %d completed out of order", len(tb.completed), tb.out_of_order)
    assert tb.out_of_order > 20, f"only {tb.out_of_order} completions out of order"
    await tb.verify_disk()
    tb.finish()


@cocotb.test()
async def malformed(dut):
    """Every malformed or failing kind of docs/robustness.md, each several times, mixed
    with good traffic in flight: the model's status and used length, nothing written
    outside W, no storage command for them, the disk unchanged by them."""
    tb = await _tb(dut)
    _random_timing(tb)
    kinds = list(BlkTB.BAD_KINDS) * 4
    tb.rng.shuffle(kinds)
    for kind in kinds:
        while len(tb.outstanding) >= 12:
            await RisingEdge(dut.clk)
        while not tb.try_submit(tb.bad_request(kind)):
            await RisingEdge(dut.clk)
        for _ in range(tb.rng.randint(0, 2)):
            tb.try_submit(tb.random_request((512, 4096)))
    await tb.drain()
    seen = {}
    for req in tb.completed:
        seen.setdefault(req.label, set()).add(
            req.outcome.status.name if req.outcome.status else "none")
    log.info("outcomes: %s", seen)
    assert seen["no_status"] == {"none"}
    assert seen["unsupported"] == {"UNSUPP"}
    for kind in ("short_header", "header_writable", "in_with_readable", "out_with_writable",
                 "flush_with_data", "get_id_len", "get_id_readable", "range", "range_wrap",
                 "length", "too_many"):
        assert seen[kind] == {"IOERR"}, (kind, seen[kind])
    assert seen["zero_sectors"] == {"OK", "IOERR"}, seen["zero_sectors"]
    assert seen["zero_length_descs"] == {"OK"}
    await tb.verify_disk()
    tb.finish()


@cocotb.test()
async def flush_ordering(dut):
    """Runs of OUTs (to the slow banks, so they finish late and out of order) each followed
    by a FLUSH: the FLUSH completes only after the storage done of every earlier OUT
    (checked at every completion), and its storage command comes after theirs."""
    tb = await _tb(dut)
    flushes_behind = 0
    for _ in range(12):
        for _ in range(tb.rng.randint(2, 8)):
            size = tb.rng.choice([512, 4096])
            # Sectors 16..31 and 24..31 of each 32 are the 90- and 200-cycle banks.
            base = 32 * tb.rng.randrange(tb.capacity // 32) + 16
            req = tb.request(OUT, sector=base + tb.rng.randrange(16 - size // SECTOR + 1),
                             data=size, label="OUT")
            if tb.overlaps(req):
                tb.unsubmit(req)
                continue
            tb.submit(req)
        flush = tb.request(FLUSH, label="FLUSH")
        tb.submit(flush)
        if any(r.storage and r.storage[0] == StorageOp.WRITE and not r.storage_done
               for r in tb.outstanding_before(flush)):
            flushes_behind += 1
        await ClockCycles(dut.clk, tb.rng.randint(0, 300))
    await tb.drain()
    assert flushes_behind >= 6, f"only {flushes_behind} FLUSHes had writes in flight"
    await tb.verify_disk()
    tb.finish()


@cocotb.test()
async def dma_errors(dut):
    """Failed DMA commands (UR, CA, poisoned, timeout) on header reads, OUT data reads, IN
    and GET_ID data writes and status writes: IOERR with used length 0 (1 for a lone
    status byte), a failed status write completes with 0 and raises needs_reset; a reset
    clears it and service goes on."""
    tb = await _tb(dut)
    _random_timing(tb)
    status_faults = []

    def watch(cycle):
        if tb.sig["needs_reset"].get() and not status_faults:
            raise Violation("needs_reset without a failed status write")
    tb.dma.cycle_hooks.append(watch)
    counts = {}
    for _ in range(90):
        while len(tb.outstanding) >= 8:
            await RisingEdge(dut.clk)
        fault = tb.rng.choice(["header", "data", "data", "status"])
        req = tb.random_request((512, 4096))
        if not tb.can_fault(req, fault) or tb.overlaps(req):
            tb.unsubmit(req)
            continue
        tb._inject(req, fault)
        if fault == "status":
            status_faults.append(req)
        counts[fault] = counts.get(fault, 0) + 1
        tb.submit(req)
        await ClockCycles(dut.clk, tb.rng.randint(0, 50))
    await tb.drain()
    assert min(counts.values()) >= 10, counts
    assert tb.sig["needs_reset"].get(), "needs_reset not raised by failed status writes"
    await tb.device_reset()
    await tb.run_traffic(60, depth=16)
    await tb.drain()
    assert not tb.sig["needs_reset"].get()
    await tb.verify_disk()
    tb.finish()


@cocotb.test()
async def reset_mid_traffic(dut):
    """Device resets at random moments of heavy traffic: idle comes with nothing
    outstanding on the DMA channels or the storage port, no completion or storage command
    while reset is held, every dropped OUT is on the disk entirely or not at all; then
    clean service."""
    tb = await _tb(dut)
    for round_ in range(4):
        _random_timing(tb)
        deadline = tb.dma.cycle + tb.rng.randint(200, 6000)
        await tb.run_traffic(10_000, depth=16, sizes=(512, 4096, 8192), bad=0.05,
                             stop=lambda: tb.dma.cycle >= deadline)
        in_flight = len(tb.outstanding)
        lost = await tb.device_reset()
        log.info("reset %d: %d requests in flight dropped", round_, in_flight)
        await tb.settle_lost_writes(lost)
    await tb.run_traffic(80, depth=16)
    await tb.drain()
    await tb.verify_disk()
    tb.finish()


@cocotb.test()
async def streaming(dut):
    """With an ideal DMA side (no back-pressure, fixed latency): 4 KiB INs at 16 in flight
    keep the DMA write channel's data stream busy, 4 KiB OUTs the read channel's."""
    tb = await _tb(dut)
    tb.dma.set_timing(Timing.ideal(latency=20))
    tb.elem_p = tb.done_p = 1.0
    for kind, channel in ((IN, "wr__0"), (OUT, "rd__0")):
        beats = []
        data_valid = FastSignal(getattr(dut, f"{channel}__data__valid"))
        data_ready = FastSignal(getattr(dut, f"{channel}__data__ready"))

        def count(cycle, v=data_valid, r=data_ready):
            beats.append(v.get() and r.get())
        tb.dma.cycle_hooks.append(count)
        reqs = 0
        while reqs < 64:
            if len(tb.outstanding) < 16:
                sector = 8 * tb.rng.randrange(tb.capacity // 8)
                if kind == IN:
                    req = tb.request(IN, sector=sector, w_data=4096, style="linux",
                                     data_segments=1)
                else:
                    req = tb.request(OUT, sector=sector, data=4096, style="linux",
                                     data_segments=1)
                if tb.overlaps(req):
                    tb.unsubmit(req)
                else:
                    tb.submit(req)
                    reqs += 1
                    continue
            await RisingEdge(dut.clk)
        await tb.drain()
        tb.dma.cycle_hooks.remove(count)
        # The middle half of the run, away from the pipeline filling and draining.
        busy = [k for k, b in enumerate(beats) if b]
        span = beats[busy[0]:busy[-1] + 1]
        middle = span[len(span) // 4: 3 * len(span) // 4]
        use = sum(middle) / len(middle)
        log.info("%s: data beats per clock %.3f", "IN" if kind == IN else "OUT", use)
        assert use >= 0.9, f"{'IN' if kind == IN else 'OUT'} data stream only {use:.3f} busy"
    tb.finish()
