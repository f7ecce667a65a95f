"""PCI capabilities of the reference device that cocotbext-pcie does not provide.

* :class:`VirtioVendorCapability`: ``struct virtio_pci_cap`` (virtio 1.2 §4.1.4), read-only,
  with the notification capability's ``notify_off_multiplier`` appended when given.
* :class:`VirtioPciCfgCapability`: ``struct virtio_pci_cfg_cap`` (§4.1.4.9): ``cap.bar``,
  ``cap.offset`` and ``cap.length`` are writable, and an access to ``pci_cfg_data`` becomes
  an access of ``cap.length`` bytes at ``cap.offset`` in BAR ``cap.bar``.
* :class:`HookedMsixCapability`: cocotbext's MSI-X capability, telling its function when
  MSI-X Enable or Function Mask change (pending vectors may become deliverable).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from cocotbext.pcie.core.caps import MsixCapability, PciCap, PciCapId

from hdl.virtio.spec import PciCapCfgType

__all__ = ["VirtioVendorCapability", "VirtioPciCfgCapability", "HookedMsixCapability"]

log = logging.getLogger(__name__)


class VirtioVendorCapability(PciCap):
    """One virtio vendor-specific capability.

    Parameters
    ----------
    cfg_type : PciCapCfgType
    bar, offset, length : int
        Where the structure is: BAR index, byte offset and length within the BAR.
    extra : bytes
        Type-specific bytes after ``struct virtio_pci_cap`` (the notify multiplier).
    """

    def __init__(self, cfg_type: PciCapCfgType, bar: int, offset: int, length: int,
                 extra: bytes = b""):
        super().__init__()
        self.cap_id = PciCapId.VNDR
        self.cfg_type = cfg_type
        cap_len = 16 + len(extra)
        # cap_vndr and cap_next (bytes 0, 1) are filled in by PciCap.read_register.
        self.body = bytearray(bytes([0, 0, cap_len, cfg_type.value, bar, 0, 0, 0])
                              + offset.to_bytes(4, "little") + length.to_bytes(4, "little")
                              + extra)
        self.length = (cap_len + 3) // 4

    async def _read_register(self, reg: int) -> int:
        return int.from_bytes(self.body[4 * reg:4 * reg + 4].ljust(4, b"\0"), "little")

    async def _write_register(self, reg: int, data: int, mask: int) -> None:
        log.debug("write to read-only virtio capability DW %d ignored", reg)


class VirtioPciCfgCapability(VirtioVendorCapability):
    """The PCI configuration access capability (§4.1.4.9).

    ``bar_read(bar, offset, length) -> bytes`` and ``bar_write(bar, offset, data)`` perform
    the BAR accesses. Accesses with a length other than 1, 2 or 4, or an offset not aligned
    to it, are ignored (the driver MUST NOT make them, §4.1.4.9.1).
    """

    def __init__(self, bar_read: Callable[[int, int, int], bytes],
                 bar_write: Callable[[int, int, bytes], None]):
        super().__init__(PciCapCfgType.PCI_CFG, 0, 0, 0, extra=bytes(4))
        self._bar_read = bar_read
        self._bar_write = bar_write

    def _window(self) -> tuple[int, int, int] | None:
        bar = self.body[4]
        offset = int.from_bytes(self.body[8:12], "little")
        length = int.from_bytes(self.body[12:16], "little")
        if length not in (1, 2, 4) or offset % length:
            log.warning("PCI cfg access window of %d bytes at %#x ignored", length, offset)
            return None
        return bar, offset, length

    async def _read_register(self, reg: int) -> int:
        if reg == 4:
            window = self._window()
            if window is not None:
                bar, offset, length = window
                self.body[16:16 + length] = self._bar_read(bar, offset, length)
        return await super()._read_register(reg)

    async def _write_register(self, reg: int, data: int, mask: int) -> None:
        raw = data.to_bytes(4, "little")
        for i in range(4):
            if not mask >> i & 1:
                continue
            byte = 4 * reg + i
            # cap.bar, cap.offset, cap.length and pci_cfg_data are writable.
            if byte == 4 or 8 <= byte < 20:
                self.body[byte] = raw[i]
        if reg == 4:
            window = self._window()
            if window is not None:
                bar, offset, length = window
                self._bar_write(bar, offset, bytes(self.body[16:16 + length]))


class HookedMsixCapability(MsixCapability):
    """cocotbext's MSI-X capability with a callback after Message Control writes."""

    def __init__(self, on_control_change: Callable[[], None]):
        super().__init__()
        self._on_control_change = on_control_change

    async def _write_register(self, reg: int, data: int, mask: int) -> None:
        await super()._write_register(reg, data, mask)
        if reg == 0:
            self._on_control_change()
