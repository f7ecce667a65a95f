"""Where a split virtqueue lives in memory, and a minimal driver side that fills it.

:class:`SplitRingLayout` holds the three areas' addresses and checks them against the
spec's alignment rules; :class:`SplitRing` reads and writes the ring fields of one queue in a
:class:`~sim.model.memory.GuestMemory`; :class:`RingDriver` does what a driver does to make
buffers available (virtio 1.2 §2.7.13): place descriptor chains (direct or through an
indirect table), put the heads in the available ring, publish ``avail->idx``, and take
descriptors back when the caller says a buffer was used. It does not read the used ring:
deciding which buffers a used ring entry returns is the job of
:class:`sim.model.virtqueue.UsedRingChecker`, which tests then use to free descriptors.

Pure Python; the only project import is the constants of :mod:`hdl.virtio.spec`.
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from hdl.virtio.spec import (
    AVAIL_FLAGS_OFFSET, AVAIL_IDX_OFFSET, AVAIL_RING_ALIGN, AVAIL_RING_OFFSET, DESC_TABLE_ALIGN,
    USED_FLAGS_OFFSET, USED_IDX_OFFSET, USED_RING_ALIGN, USED_RING_OFFSET, VIRTQ_AVAIL_ELEM_BYTES,
    VIRTQ_DESC_BYTES, VIRTQ_USED_ELEM_BYTES, VirtqDescFlags, avail_event_offset, avail_ring_bytes,
    check_queue_size, desc_table_bytes, used_event_offset, used_ring_bytes,
)
from sim.model.memory import GuestMemory

__all__ = ["RawDesc", "encode_desc", "decode_desc", "encode_used_elem", "decode_used_elem",
           "SplitRingLayout", "SplitRing", "RingDriver"]

_DESC = struct.Struct("<QIHH")    # struct virtq_desc: le64 addr, le32 len, le16 flags, next
_USED_ELEM = struct.Struct("<II")     # struct virtq_used_elem: le32 id, le32 len

_NEXT = int(VirtqDescFlags.NEXT)
_WRITE = int(VirtqDescFlags.WRITE)
_INDIRECT = int(VirtqDescFlags.INDIRECT)


class RawDesc(NamedTuple):
    """A descriptor as stored in a descriptor table (virtio 1.2 §2.7.5)."""
    addr: int
    len: int
    flags: int = 0
    next: int = 0


def encode_desc(desc: RawDesc) -> bytes:
    return _DESC.pack(*desc)


def decode_desc(raw: bytes) -> RawDesc:
    return RawDesc._make(_DESC.unpack(raw))


def encode_used_elem(id_: int, len_: int) -> bytes:
    return _USED_ELEM.pack(id_, len_)


def decode_used_elem(raw: bytes) -> tuple[int, int]:
    return _USED_ELEM.unpack(raw)


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


@dataclass(frozen=True)
class SplitRingLayout:
    """Addresses of one split virtqueue's Descriptor, Driver and Device Areas.

    ``desc_addr``, ``driver_addr`` and ``device_addr`` are what a driver writes to
    ``queue_desc``, ``queue_driver`` and ``queue_device`` (virtio 1.2 §4.1.4.3); each must be
    aligned as §2.7 requires (16, 2 and 4 bytes), or ``ValueError`` is raised.
    """
    queue_size: int
    desc_addr: int
    driver_addr: int
    device_addr: int

    def __post_init__(self):
        check_queue_size(self.queue_size)
        for name, align in (("desc_addr", DESC_TABLE_ALIGN), ("driver_addr", AVAIL_RING_ALIGN),
                            ("device_addr", USED_RING_ALIGN)):
            addr = getattr(self, name)
            if addr < 0 or addr % align:
                raise ValueError(f"{name} {addr:#x} is not a multiple of {align} "
                                 f"(virtio 1.2 §2.7.1)")

    @classmethod
    def contiguous(cls, base: int, queue_size: int) -> SplitRingLayout:
        """The three areas packed one after the other from ``base`` (rounded up to 16)."""
        desc = _align_up(base, DESC_TABLE_ALIGN)
        driver = _align_up(desc + desc_table_bytes(queue_size), AVAIL_RING_ALIGN)
        device = _align_up(driver + avail_ring_bytes(queue_size), USED_RING_ALIGN)
        return cls(queue_size, desc, driver, device)

    def desc_entry(self, index: int) -> int:
        return self.desc_addr + VIRTQ_DESC_BYTES * index

    @property
    def avail_flags(self) -> int:
        return self.driver_addr + AVAIL_FLAGS_OFFSET

    @property
    def avail_idx(self) -> int:
        return self.driver_addr + AVAIL_IDX_OFFSET

    def avail_entry(self, slot: int) -> int:
        return self.driver_addr + AVAIL_RING_OFFSET + VIRTQ_AVAIL_ELEM_BYTES * slot

    @property
    def used_event(self) -> int:
        return self.driver_addr + used_event_offset(self.queue_size)

    @property
    def used_flags(self) -> int:
        return self.device_addr + USED_FLAGS_OFFSET

    @property
    def used_idx(self) -> int:
        return self.device_addr + USED_IDX_OFFSET

    def used_entry(self, slot: int) -> int:
        return self.device_addr + USED_RING_OFFSET + VIRTQ_USED_ELEM_BYTES * slot

    @property
    def avail_event(self) -> int:
        return self.device_addr + avail_event_offset(self.queue_size)


class SplitRing:
    """Typed access to the fields of one split virtqueue in ``mem``."""

    def __init__(self, mem: GuestMemory, layout: SplitRingLayout):
        self.mem = mem
        self.layout = layout

    def _u16(self, addr: int) -> int:
        return int.from_bytes(self.mem.read(addr, 2), "little")

    def _set_u16(self, addr: int, value: int) -> None:
        self.mem.write(addr, value.to_bytes(2, "little"))

    # descriptor table (§2.7.5)
    def desc(self, index: int) -> RawDesc:
        return decode_desc(self.mem.read(self.layout.desc_entry(index), VIRTQ_DESC_BYTES))

    def set_desc(self, index: int, desc: RawDesc) -> None:
        self.mem.write(self.layout.desc_entry(index), encode_desc(desc))

    # driver area (§2.7.6)
    def avail_flags(self) -> int:
        return self._u16(self.layout.avail_flags)

    def set_avail_flags(self, value: int) -> None:
        self._set_u16(self.layout.avail_flags, value)

    def avail_idx(self) -> int:
        return self._u16(self.layout.avail_idx)

    def set_avail_idx(self, value: int) -> None:
        self._set_u16(self.layout.avail_idx, value)

    def avail_entry(self, slot: int) -> int:
        return self._u16(self.layout.avail_entry(slot))

    def set_avail_entry(self, slot: int, head: int) -> None:
        self._set_u16(self.layout.avail_entry(slot), head)

    def used_event(self) -> int:
        return self._u16(self.layout.used_event)

    def set_used_event(self, value: int) -> None:
        self._set_u16(self.layout.used_event, value)

    # device area (§2.7.8)
    def used_flags(self) -> int:
        return self._u16(self.layout.used_flags)

    def used_idx(self) -> int:
        return self._u16(self.layout.used_idx)

    def set_used_idx(self, value: int) -> None:
        self._set_u16(self.layout.used_idx, value)

    def used_elem(self, slot: int) -> tuple[int, int]:
        return decode_used_elem(self.mem.read(self.layout.used_entry(slot),
                                              VIRTQ_USED_ELEM_BYTES))

    def set_used_elem(self, slot: int, id_: int, len_: int) -> None:
        self.mem.write(self.layout.used_entry(slot), encode_used_elem(id_, len_))

    def avail_event(self) -> int:
        return self._u16(self.layout.avail_event)

    def set_avail_event(self, value: int) -> None:
        self._set_u16(self.layout.avail_event, value)


class RingDriver:
    """The driver side of one split virtqueue, reduced to making buffers available.

    Parameters
    ----------
    ring : SplitRing
        The queue; its areas are zeroed here, as a driver allocating a ring does (the used
        ring's ``flags`` MUST start at 0, virtio 1.2 §2.7.10.1).
    in_order : bool
        VIRTIO_F_IN_ORDER negotiated: descriptors are taken in ring order, starting from 0 and
        wrapping at the end of the table, with ``next = x + 1`` (0 for the last entry), and
        returned in the same order (§2.7.5, §2.7.5.2). Otherwise a free list is used, so
        chains land on scattered, reused descriptor indices.

    A buffer is a sequence of ``(addr, len, write)`` elements, device-readable ones first
    (§2.7.4.2). :meth:`add` places it and returns its head; :meth:`publish` makes everything
    added so far visible to the device; :meth:`free` takes a used buffer's descriptors back.
    """

    def __init__(self, ring: SplitRing, *, in_order: bool = False):
        self.ring = ring
        self.in_order = in_order
        self.queue_size = ring.layout.queue_size
        layout = ring.layout
        ring.mem.write(layout.desc_addr, bytes(desc_table_bytes(self.queue_size)))
        ring.mem.write(layout.driver_addr, bytes(avail_ring_bytes(self.queue_size)))
        ring.mem.write(layout.device_addr, bytes(used_ring_bytes(self.queue_size)))
        self.avail_idx = 0          # published avail->idx
        self._added = 0             # heads placed but not yet published
        self._free = list(range(self.queue_size - 1, -1, -1))   # free list: pop() takes 0 first
        self._next_in_order = 0     # in-order mode: next descriptor index in ring order
        self._num_free = self.queue_size
        self._chains: dict[int, list[int]] = {}     # head -> descriptor indices it holds

    @property
    def num_free(self) -> int:
        return self._num_free

    def _take(self, count: int) -> list[int]:
        if count > self._num_free:
            raise ValueError(f"{count} descriptors needed, {self._num_free} free")
        self._num_free -= count
        if self.in_order:
            first = self._next_in_order
            self._next_in_order = (first + count) % self.queue_size
            return [(first + i) % self.queue_size for i in range(count)]
        return [self._free.pop() for _ in range(count)]

    def add(self, elements: Sequence[tuple[int, int, bool]], *,
            indirect_table: int | None = None) -> int:
        """Place one buffer and put its head in the next available ring slot (unpublished).

        With ``indirect_table`` (an address, 16-byte aligned) the elements are written there
        as an indirect descriptor table, chained 0 -> 1 -> 2 ... (§2.7.5.3), and the ring
        gets a single descriptor with VIRTQ_DESC_F_INDIRECT; otherwise the elements take one
        ring descriptor each.
        """
        if not elements:
            raise ValueError("a buffer has at least one element (virtio 1.2 §2.7.13.1)")
        writes = [bool(write) for _, _, write in elements]
        if writes != sorted(writes):
            raise ValueError("device-writable elements must follow device-readable ones "
                             "(virtio 1.2 §2.7.4.2)")
        if indirect_table is not None:
            if indirect_table % VIRTQ_DESC_BYTES:
                raise ValueError(f"indirect table {indirect_table:#x} is not 16-byte aligned")
            table = b"".join(
                encode_desc(RawDesc(addr, len_, (_WRITE if write else 0)
                                    | (_NEXT if i + 1 < len(elements) else 0),
                                    i + 1 if i + 1 < len(elements) else 0))
                for i, (addr, len_, write) in enumerate(elements))
            self.ring.mem.write(indirect_table, table)
            (head,) = indices = self._take(1)
            self.ring.set_desc(head, RawDesc(indirect_table, len(table), _INDIRECT, 0))
        else:
            indices = self._take(len(elements))
            head = indices[0]
            for i, (addr, len_, write) in enumerate(elements):
                last = i + 1 == len(elements)
                flags = (_WRITE if write else 0) | (0 if last else _NEXT)
                self.ring.set_desc(indices[i], RawDesc(addr, len_, flags,
                                                       0 if last else indices[i + 1]))
        self._chains[head] = indices
        self.ring.set_avail_entry((self.avail_idx + self._added) % self.queue_size, head)
        self._added += 1
        return head

    def publish(self) -> int:
        """Expose the added heads: ``avail->idx += added`` (§2.7.13.3). Returns the new idx."""
        self.avail_idx = (self.avail_idx + self._added) & 0xFFFF
        self._added = 0
        self.ring.set_avail_idx(self.avail_idx)
        return self.avail_idx

    def free(self, head: int) -> None:
        """Take back the descriptors of a used buffer whose chain starts at ``head``."""
        indices = self._chains.pop(head)
        self._num_free += len(indices)
        if not self.in_order:
            self._free.extend(reversed(indices))

    def set_no_interrupt(self, on: bool) -> None:
        """Set or clear VIRTQ_AVAIL_F_NO_INTERRUPT (meaningful without EVENT_IDX, §2.7.7.1)."""
        self.ring.set_avail_flags(1 if on else 0)

    def set_used_event(self, value: int) -> None:
        """Ask for a notification once the used ring entry at index ``value`` is written
        (meaningful with EVENT_IDX, §2.7.7.1)."""
        self.ring.set_used_event(value & 0xFFFF)
