"""Golden model of a virtio-blk device's request handling (virtio 1.2 §5.2), and a RAM disk.

Written from the spec, independently of the RTL. Pure Python.

A request is one virtqueue element (virtio 1.2 §5.2.6)::

    struct virtio_blk_req { le32 type; le32 reserved; le64 sector; u8 data[]; u8 status; };

The device must not assume how the request is split into descriptors (§2.7.4.1), so this
model sees an element as two byte streams: the concatenation of its device-readable buffers
(*R*) and of its device-writable buffers (*W*). The header is ``R[0:16]``; OUT data is
``R[16:]``; IN / GET_ID data is ``W[:-1]``; the status byte is the last byte of *W*.

What it serves: VIRTIO_BLK_T_IN, T_OUT, T_FLUSH (when VIRTIO_BLK_F_FLUSH is offered) and
T_GET_ID; any other type is answered VIRTIO_BLK_S_UNSUPP. The outcome of every malformed
request is defined here and in `docs/robustness.md` (the hardware follows the same rules):

* no device-writable byte (nowhere to put a status): nothing is executed or written, used
  length 0;
* fewer than 16 device-readable bytes (short header): IOERR;
* a type the device does not serve: UNSUPP;
* IN with device-readable bytes after the header: IOERR;
* OUT with device-writable bytes before the status byte: IOERR;
* FLUSH with any data: IOERR;
* GET_ID with device-readable data, or a data length other than 20: IOERR;
* IN / OUT with a data length that is not a multiple of 512: IOERR;
* IN / OUT reaching past ``capacity``: IOERR;
* OUT when VIRTIO_BLK_F_RO is offered: IOERR (§5.2.6.2).

IOERR and UNSUPP never touch the disk and write only the status byte. The ``reserved``
field is ignored, and so is ``sector`` for FLUSH and GET_ID ("unused", §5.2.6).

The used length (§2.7.8.2): the device "MUST write at least len bytes ... beginning at the
first device-writable buffer", so ``len`` counts the written *prefix* of *W*: all of *W* when
data and status filled it (successful IN and GET_ID, or any request whose *W* is the status
byte alone), and 0 when only the status byte at the end of a longer *W* was written (a failed
IN, for instance). Such a buffer is not "used completely", so under VIRTIO_F_IN_ORDER it must
end a batch (§2.7.9; see :mod:`sim.model.virtqueue`).
"""
from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from hdl.virtio.spec import (
    BlkConfig, BlkFeature, Feature, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_REQ_HEADER_BYTES,
    VIRTIO_BLK_SECTOR_BYTES, VirtioBlkStatus, VirtioBlkType, feature_mask,
)
from sim.model.memory import GuestMemory
from sim.model.virtqueue import Descriptor

__all__ = ["Disk", "BlkOutcome", "BlkDeviceModel", "BlkDeviceConfig", "gather", "scatter",
           "encode_request_header"]

logger = logging.getLogger(__name__)

SECTOR = VIRTIO_BLK_SECTOR_BYTES
_HEADER = struct.Struct("<IIQ")     # type, reserved, sector


def encode_request_header(type_: VirtioBlkType | int, sector: int = 0,
                          reserved: int = 0) -> bytes:
    """The 16-byte request header a driver writes (``VirtioBlkReqHeader``, §5.2.6)."""
    return _HEADER.pack(int(type_.value if isinstance(type_, VirtioBlkType) else type_),
                        reserved, sector)


class Disk:
    """A RAM disk of ``capacity`` 512-byte sectors, initially ``data`` (or zeros)."""

    def __init__(self, capacity: int, data: bytes | None = None):
        if capacity < 0:
            raise ValueError(f"capacity must be non-negative, not {capacity}")
        if data is not None and len(data) != capacity * SECTOR:
            raise ValueError(f"initial data is {len(data)} bytes, a disk of {capacity} sectors "
                             f"holds {capacity * SECTOR}")
        self.capacity = capacity
        self._data = bytearray(data) if data is not None else bytearray(capacity * SECTOR)

    def _check(self, sector: int, count: int) -> None:
        if sector < 0 or count < 0 or sector + count > self.capacity:
            raise ValueError(f"sectors {sector}..{sector + count - 1} are outside a disk of "
                             f"{self.capacity} sectors")

    def read(self, sector: int, count: int) -> bytes:
        self._check(sector, count)
        return bytes(self._data[sector * SECTOR:(sector + count) * SECTOR])

    def write(self, sector: int, data: bytes) -> None:
        if len(data) % SECTOR:
            raise ValueError(f"{len(data)} bytes is not a whole number of sectors")
        self._check(sector, len(data) // SECTOR)
        self._data[sector * SECTOR:sector * SECTOR + len(data)] = data

    def image(self) -> bytes:
        return bytes(self._data)

    def copy(self) -> Disk:
        return Disk(self.capacity, self.image())


@dataclass(frozen=True)
class BlkOutcome:
    """What the device does with one request.

    ``status`` is None when the request had no device-writable byte (nothing is written);
    ``data`` is what goes at the start of the device-writable stream (IN data, GET_ID
    string), the status byte goes at offset ``writable_len - 1``; ``written_len`` is the used
    element's ``len``; ``reason`` says why for anything but OK.
    """
    status: VirtioBlkStatus | None
    data: bytes
    writable_len: int
    written_len: int
    reason: str = ""

    def writable_writes(self) -> list[tuple[int, bytes]]:
        """``(offset in the device-writable stream, bytes)`` of every byte the device writes."""
        if self.status is None:
            return []
        writes = [(0, self.data)] if self.data else []
        return writes + [(self.writable_len - 1, bytes([self.status.value]))]


def gather(descriptors: Sequence[Descriptor], mem: GuestMemory) -> bytes:
    """The device-readable byte stream of an element."""
    return b"".join(mem.read(d.addr, d.len) for d in descriptors if not d.write)


def scatter(descriptors: Sequence[Descriptor], offset: int, data: bytes) -> list[tuple[int, bytes]]:
    """Where ``data`` at ``offset`` of the device-writable stream lands: ``(addr, bytes)``
    pieces, one per device-writable buffer it touches. Never outside those buffers."""
    pieces = []
    position = 0
    end = offset + len(data)
    for d in descriptors:
        if not d.write:
            continue
        lo, hi = max(offset, position), min(end, position + d.len)
        if lo < hi:
            pieces.append((d.addr + lo - position, data[lo - offset:hi - offset]))
        position += d.len
    if end > position:
        raise ValueError(f"{len(data)} bytes at offset {offset} do not fit {position} "
                         f"device-writable bytes")
    return pieces


class BlkDeviceModel:
    """virtio-blk request handling over a :class:`Disk` (virtio 1.2 §5.2.6).

    Parameters
    ----------
    disk : Disk
        The storage; ``capacity`` in the configuration space is ``disk.capacity``.
    serial : bytes or str
        The device ID string returned by GET_ID: ASCII, at most 20 bytes, NUL-padded to 20.
    read_only : bool
        VIRTIO_BLK_F_RO offered: every OUT fails with IOERR and writes nothing.
    flush : bool
        VIRTIO_BLK_F_FLUSH offered: FLUSH is served (a RAM disk has nothing to flush, so it
        just succeeds); without it FLUSH is UNSUPP.

    Attributes
    ----------
    counts : collections.Counter
        Requests seen, by ``(type name or number, status name)``.
    """

    def __init__(self, disk: Disk, *, serial: bytes | str = b"", read_only: bool = False,
                 flush: bool = True):
        if isinstance(serial, str):
            serial = serial.encode("ascii")
        if len(serial) > VIRTIO_BLK_ID_BYTES or any(not 0 < b < 0x80 for b in serial):
            raise ValueError(f"serial {serial!r} is not an ASCII string of at most "
                             f"{VIRTIO_BLK_ID_BYTES} bytes without NUL (virtio 1.2 §5.2.6)")
        self.disk = disk
        self.id_bytes = serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")
        self.read_only = read_only
        self.flush = flush
        self.counts: Counter = Counter()

    def handle(self, readable: bytes, writable_len: int) -> BlkOutcome:
        """Execute a request given its device-readable bytes and device-writable length."""
        outcome, type_name = self._handle(readable, writable_len)
        self.counts[(type_name, outcome.status.name if outcome.status else "NONE")] += 1
        if outcome.reason:
            logger.debug("%s request: %s (%s)", type_name,
                         outcome.status.name if outcome.status else "no status", outcome.reason)
        return outcome

    def handle_element(self, descriptors: Sequence[Descriptor],
                       mem: GuestMemory) -> BlkOutcome:
        """Execute a request held by an element's ``descriptors`` in ``mem``: reads the
        device-readable buffers, writes data and status into the device-writable ones."""
        writable_len = sum(d.len for d in descriptors if d.write)
        outcome = self.handle(gather(descriptors, mem), writable_len)
        for offset, data in outcome.writable_writes():
            for addr, piece in scatter(descriptors, offset, data):
                mem.write(addr, piece)
        return outcome

    def _handle(self, readable: bytes, writable_len: int) -> tuple[BlkOutcome, str]:
        def fail(status: VirtioBlkStatus, reason: str, name: str) -> tuple[BlkOutcome, str]:
            # Only the status byte is written, at the end of the writable stream.
            return BlkOutcome(status, b"", writable_len, 1 if writable_len == 1 else 0,
                              reason), name

        def ok(data: bytes, name: str) -> tuple[BlkOutcome, str]:
            return BlkOutcome(VirtioBlkStatus.OK, data, writable_len, writable_len), name

        if writable_len == 0:
            return BlkOutcome(None, b"", 0, 0, "no device-writable byte for the status"), "?"
        if len(readable) < VIRTIO_BLK_REQ_HEADER_BYTES:
            return fail(VirtioBlkStatus.IOERR, f"header is {len(readable)} bytes, not 16", "?")
        type_num, _reserved, sector = _HEADER.unpack_from(readable)
        data_out = readable[VIRTIO_BLK_REQ_HEADER_BYTES:]
        data_in_len = writable_len - 1
        try:
            type_ = VirtioBlkType(type_num)
        except ValueError:
            return fail(VirtioBlkStatus.UNSUPP, f"unknown type {type_num}", str(type_num))
        name = type_.name
        if type_ not in self._served():
            return fail(VirtioBlkStatus.UNSUPP, "type not served", name)

        if type_ is VirtioBlkType.IN:
            if data_out:
                return fail(VirtioBlkStatus.IOERR, "IN with device-readable data", name)
            problem = self._check_range(sector, data_in_len)
            if problem:
                return fail(VirtioBlkStatus.IOERR, problem, name)
            return ok(self.disk.read(sector, data_in_len // SECTOR), name)

        if type_ is VirtioBlkType.OUT:
            if data_in_len:
                return fail(VirtioBlkStatus.IOERR, "OUT with device-writable data", name)
            if self.read_only:
                return fail(VirtioBlkStatus.IOERR, "device is read-only", name)
            problem = self._check_range(sector, len(data_out))
            if problem:
                return fail(VirtioBlkStatus.IOERR, problem, name)
            self.disk.write(sector, data_out)
            return ok(b"", name)

        if type_ is VirtioBlkType.FLUSH:
            if data_out or data_in_len:
                return fail(VirtioBlkStatus.IOERR, "FLUSH with data", name)
            return ok(b"", name)

        # GET_ID: "The length of data MUST be 20 bytes" (§5.2.6.1)
        if data_out or data_in_len != VIRTIO_BLK_ID_BYTES:
            return fail(VirtioBlkStatus.IOERR,
                        f"GET_ID with {len(data_out)} readable and {data_in_len} writable "
                        f"data bytes, expected 0 and {VIRTIO_BLK_ID_BYTES}", name)
        return ok(self.id_bytes, name)

    def _served(self) -> set[VirtioBlkType]:
        served = {VirtioBlkType.IN, VirtioBlkType.OUT, VirtioBlkType.GET_ID}
        if self.flush:
            served.add(VirtioBlkType.FLUSH)
        return served

    def _check_range(self, sector: int, length: int) -> str:
        if length % SECTOR:
            return f"data length {length} is not a multiple of {SECTOR}"
        # Python integers do not wrap: sector + count is compared exactly, as the hardware
        # must (a 64-bit sector near 2**64 must not wrap into range).
        if sector + length // SECTOR > self.disk.capacity:
            return (f"sectors {sector}..{sector + length // SECTOR - 1} past capacity "
                    f"{self.disk.capacity}")
        return ""


@dataclass(frozen=True)
class BlkDeviceConfig:
    """The virtio-blk device configuration space and the features that announce it
    (virtio 1.2 §5.2.4). Fields left at None are not offered; ``capacity`` always is."""
    capacity: int
    size_max: int | None = None
    seg_max: int | None = None
    blk_size: int | None = None
    num_queues: int | None = None
    read_only: bool = False
    flush: bool = True

    def features(self) -> int:
        """Device feature bits: VERSION_1 plus the blk bits these fields imply."""
        bits = [Feature.VERSION_1]
        for value, bit in ((self.size_max, BlkFeature.SIZE_MAX),
                           (self.seg_max, BlkFeature.SEG_MAX),
                           (self.blk_size, BlkFeature.BLK_SIZE),
                           (self.num_queues, BlkFeature.MQ)):
            if value is not None:
                bits.append(bit)
        if self.read_only:
            bits.append(BlkFeature.RO)
        if self.flush:
            bits.append(BlkFeature.FLUSH)
        return feature_mask(*bits)

    def encode(self) -> bytes:
        """The configuration space bytes (``BlkConfig.SIZE`` of them, little-endian); fields
        whose feature is not offered, and the padding, read as zero (§5.2.5.2)."""
        space = bytearray(BlkConfig.SIZE)
        for offset, fmt, value in ((BlkConfig.CAPACITY, "<Q", self.capacity),
                                   (BlkConfig.SIZE_MAX, "<I", self.size_max),
                                   (BlkConfig.SEG_MAX, "<I", self.seg_max),
                                   (BlkConfig.BLK_SIZE, "<I", self.blk_size),
                                   (BlkConfig.NUM_QUEUES, "<H", self.num_queues)):
            if value is not None:
                struct.pack_into(fmt, space, offset, value)
        return bytes(space)
