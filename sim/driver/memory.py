"""Host memory the driver model allocates its rings and request buffers from.

A real driver gets DMA-able memory from the kernel (``dma_alloc_coherent`` for rings,
``kmalloc`` for indirect tables and request headers, pages for data). Here one block of the
root complex's memory (``RootComplex.alloc_region``) is carved up by a first-fit allocator.
Every allocation carries a :class:`DmaKind`, so that a device access to host memory can be
classified as control traffic (rings, indirect tables) or payload (request buffers) by
address alone, whatever device made it (see :mod:`sim.driver.traffic`).

The CPU side reads and writes the bytes directly, without TLPs, as a CPU does; the device
reaches the same bytes only through the root complex. :class:`HostMemory` implements the
``read`` / ``write`` protocol of :class:`sim.model.memory.GuestMemory`, so the split-ring
field accessors of :mod:`sim.model.split_ring` work on it.
"""
from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass

__all__ = ["DmaKind", "Allocation", "HostMemory", "OutOfMemory"]

_MIN_ALIGN = 8


class DmaKind(enum.Enum):
    """What an allocation holds, for traffic accounting."""
    RING = "ring"           # descriptor table, available and used rings of a virtqueue
    INDIRECT = "indirect"   # an indirect descriptor table (virtio 1.2 §2.7.5.3)
    BUFFER = "buffer"       # request headers, data buffers, status bytes

    @property
    def control(self) -> bool:
        """True for the virtqueue's own structures, False for request buffers."""
        return self is not DmaKind.BUFFER


@dataclass(frozen=True, slots=True)
class Allocation:
    addr: int
    size: int
    kind: DmaKind


class OutOfMemory(MemoryError):
    """The host memory block has no free range of the size asked for."""


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


class HostMemory:
    """A block of host memory at bus address ``base`` with a first-fit allocator.

    Parameters
    ----------
    base : int
        Bus address of the first byte.
    size : int
        Bytes in the block.
    backing : bytearray or mmap, optional
        The bytes themselves (the root complex's region); a fresh ``bytearray`` by default,
        which is what unit tests without a root complex use.

    Attributes
    ----------
    in_use : int
        Bytes currently allocated (after rounding).
    """

    def __init__(self, base: int, size: int, backing=None):
        if base < 0 or size <= 0:
            raise ValueError(f"host memory block at {base:#x} of {size} bytes is not valid")
        if backing is not None and len(backing) < size:
            raise ValueError(f"backing of {len(backing)} bytes is smaller than the block "
                             f"({size} bytes)")
        self.base = base
        self.size = size
        self._mem = backing if backing is not None else bytearray(size)
        self._free: list[tuple[int, int]] = [(base, size)]     # (addr, size), sorted by addr
        self._starts: list[int] = []                            # sorted allocation addresses
        self._allocs: dict[int, Allocation] = {}
        self.in_use = 0

    @classmethod
    def from_root_complex(cls, rc, size: int = 16 << 20) -> HostMemory:
        """Take ``size`` bytes of the root complex's memory (``RootComplex.alloc_region``)."""
        addr, mem = rc.alloc_region(size)
        return cls(addr, size, mem)

    # --- allocation -------------------------------------------------------------------------
    def alloc(self, size: int, *, align: int = _MIN_ALIGN, kind: DmaKind = DmaKind.BUFFER,
              slack: int = 0) -> int:
        """Allocate ``size`` bytes aligned to ``align`` (a power of two); returns the bus
        address. ``slack`` extra bytes are reserved behind the allocation so that the next
        allocation does not follow it directly (scattered buffers)."""
        if size <= 0:
            raise ValueError(f"allocation size must be positive, not {size}")
        if align < 1 or align & (align - 1):
            raise ValueError(f"alignment {align} is not a power of two")
        align = max(align, _MIN_ALIGN)
        need = _align_up(size + slack, _MIN_ALIGN)
        for i, (start, length) in enumerate(self._free):
            addr = _align_up(start, align)
            if addr + need > start + length:
                continue
            pieces = []
            if addr > start:
                pieces.append((start, addr - start))
            if addr + need < start + length:
                pieces.append((addr + need, start + length - addr - need))
            self._free[i:i + 1] = pieces
            self._allocs[addr] = Allocation(addr, need, kind)
            bisect.insort(self._starts, addr)
            self.in_use += need
            return addr
        raise OutOfMemory(f"no free range of {need} bytes aligned to {align} in host memory "
                          f"({self.in_use} of {self.size} bytes in use)")

    def free(self, addr: int) -> None:
        """Return an allocation made by :meth:`alloc`."""
        alloc = self._allocs.pop(addr, None)
        if alloc is None:
            raise ValueError(f"{addr:#x} is not the start of an allocation")
        del self._starts[bisect.bisect_left(self._starts, addr)]
        self.in_use -= alloc.size
        # Insert the range into the sorted free list and merge it with touching neighbours.
        i = bisect.bisect_left(self._free, (addr, 0))
        start, end = addr, addr + alloc.size
        if i < len(self._free) and self._free[i][0] == end:
            end += self._free[i][1]
            del self._free[i]
        if i > 0 and sum(self._free[i - 1]) == start:
            start = self._free[i - 1][0]
            del self._free[i - 1]
            i -= 1
        self._free.insert(i, (start, end - start))

    def allocation_at(self, addr: int) -> Allocation | None:
        """The allocation holding bus address ``addr``, if any."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        alloc = self._allocs[self._starts[i]]
        return alloc if addr < alloc.addr + alloc.size else None

    def contains(self, addr: int, length: int = 1) -> bool:
        return self.base <= addr and addr + length <= self.base + self.size

    # --- CPU access -------------------------------------------------------------------------
    def _offset(self, addr: int, length: int) -> int:
        if not self.contains(addr, length):
            raise ValueError(f"access of {length} bytes at {addr:#x} is outside host memory "
                             f"{self.base:#x}..{self.base + self.size - 1:#x}")
        return addr - self.base

    def read(self, addr: int, length: int) -> bytes:
        offset = self._offset(addr, length)
        return bytes(self._mem[offset:offset + length])

    def write(self, addr: int, data: bytes) -> None:
        offset = self._offset(addr, len(data))
        self._mem[offset:offset + len(data)] = bytes(data)

    def read_u16(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 2), "little")

    def write_u16(self, addr: int, value: int) -> None:
        self.write(addr, value.to_bytes(2, "little"))
