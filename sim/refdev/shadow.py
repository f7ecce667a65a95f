"""The device's local copy of the host memory it has read.

The golden models (:mod:`sim.model.virtqueue`) read and write memory synchronously; a
device reaches host memory only through DMA, which takes simulated time. The reference
device therefore runs the models on a :class:`ShadowMemory`: bytes it has fetched by DMA,
plus the used ring it writes. A model read of a byte the device has not fetched raises
:class:`MissingBytes`; the device then fetches it and runs the (side-effect free) chain walk
again. :meth:`ShadowMemory.invalidate` forgets everything fetched, except pinned ranges
(the used ring, and the driver-area words the device keeps its last value of), so that a
fetch pass never sees a descriptor from an earlier one.
"""
from __future__ import annotations

from sim.model.memory import SparseMemory

__all__ = ["MissingBytes", "ShadowMemory"]


class MissingBytes(Exception):
    """A read of ``length`` bytes from ``addr`` on that the device has not fetched."""

    def __init__(self, addr: int, length: int):
        super().__init__(f"{length} bytes at {addr:#x} not fetched")
        self.addr = addr
        self.length = length


class ShadowMemory:
    """Sparse memory that knows which bytes hold fetched data."""

    def __init__(self) -> None:
        self._data = SparseMemory()
        self._valid = SparseMemory()
        self._pinned: list[tuple[int, int]] = []

    def read(self, addr: int, length: int) -> bytes:
        valid = self._valid.read(addr, length)
        if valid.count(1) != length:
            first = valid.index(0)
            raise MissingBytes(addr + first, length - first)
        return self._data.read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self._data.write(addr, data)
        self._valid.write(addr, b"\x01" * len(data))

    fill = write

    def pin(self, addr: int, length: int) -> None:
        """Keep ``[addr, addr + length)`` valid across :meth:`invalidate` (its contents are
        whatever was last filled or written)."""
        self._pinned.append((addr, length))
        self._valid.write(addr, b"\x01" * length)

    def invalidate(self) -> None:
        self._valid = SparseMemory()
        for addr, length in self._pinned:
            self._valid.write(addr, b"\x01" * length)
