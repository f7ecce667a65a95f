"""A byte-addressed guest memory for the golden models.

The models read descriptors and rings from, and write used rings and data into, anything
that has ``read(addr, length) -> bytes`` and ``write(addr, data)`` (:class:`GuestMemory`).
:class:`SparseMemory` is the plain implementation: a 64-bit address space in 4 KiB pages
allocated on first write, where bytes never written read as zero. Multi-byte accessors are
little-endian, as every virtio structure is (virtio 1.2 §2.7, §4.1.3), and refuse values
that do not fit (``OverflowError``) rather than truncate them.
"""
from __future__ import annotations

from typing import Protocol

__all__ = ["GuestMemory", "SparseMemory"]

_PAGE_BITS = 12
_PAGE = 1 << _PAGE_BITS
_ADDR_LIMIT = 1 << 64


class GuestMemory(Protocol):
    """What the models need from host memory."""

    def read(self, addr: int, length: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


class SparseMemory:
    """Sparse little-endian memory; unwritten bytes read as zero."""

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}

    @staticmethod
    def _check(addr: int, length: int) -> None:
        if addr < 0 or length < 0 or addr + length > _ADDR_LIMIT:
            raise ValueError(f"access of {length} bytes at {addr:#x} is outside the 64-bit "
                             f"address space")

    def read(self, addr: int, length: int) -> bytes:
        page, offset = addr >> _PAGE_BITS, addr & (_PAGE - 1)
        if addr >= 0 and 0 <= length <= _PAGE - offset:     # within one page: the usual case
            data = self._pages.get(page)
            return bytes(data[offset:offset + length]) if data is not None else bytes(length)
        self._check(addr, length)
        out = bytearray()
        while length:
            page, offset = addr >> _PAGE_BITS, addr & (_PAGE - 1)
            chunk = min(length, _PAGE - offset)
            data = self._pages.get(page)
            out += data[offset:offset + chunk] if data is not None else bytes(chunk)
            addr += chunk
            length -= chunk
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        page, offset = addr >> _PAGE_BITS, addr & (_PAGE - 1)
        if addr >= 0 and len(data) <= _PAGE - offset:         # within one page
            buf = self._pages.get(page)
            if buf is None:
                buf = self._pages[page] = bytearray(_PAGE)
            buf[offset:offset + len(data)] = data
            return
        self._check(addr, len(data))
        view = memoryview(bytes(data))
        while view:
            page, offset = addr >> _PAGE_BITS, addr & (_PAGE - 1)
            chunk = min(len(view), _PAGE - offset)
            buf = self._pages.get(page)
            if buf is None:
                buf = self._pages[page] = bytearray(_PAGE)
            buf[offset:offset + chunk] = view[:chunk]
            addr += chunk
            view = view[chunk:]

    def read_u16(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 2), "little")

    def read_u32(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 4), "little")

    def read_u64(self, addr: int) -> int:
        return int.from_bytes(self.read(addr, 8), "little")

    def write_u16(self, addr: int, value: int) -> None:
        self.write(addr, value.to_bytes(2, "little"))

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, value.to_bytes(4, "little"))

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, value.to_bytes(8, "little"))
