"""Parameters of the PCIe endpoint function that several components share.

These are plain, validated descriptions (no hardware): the function's identity, its link as
built on a board, and the vendor-specific capabilities a transport asks the configuration
space to carry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .spec import CapId, PcieCap

__all__ = ["FunctionIdentity", "LinkParams", "VendorCapability", "place_capabilities",
           "capability_chain"]


def _check_int(name: str, value: int, bits: int) -> None:
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an integer of {bits} bits, not {value!r}")


@dataclass(frozen=True)
class FunctionIdentity:
    """Read-only identity registers of the Type 0 header (PCIe Base §7.5.1.1, §7.5.1.2).

    Defaults are the project's virtio-blk identity (``shared/design/ARCHITECTURE.md``):
    modern virtio device 0x1040 + 2 (virtio 1.2 §4.1.2.1), mass storage class.
    """
    vendor_id: int = 0x1AF4
    device_id: int = 0x1042
    revision_id: int = 0x01
    class_code: int = 0x010000      # base class, sub-class, programming interface
    subsystem_vendor_id: int = 0x1AF4
    subsystem_id: int = 0x1100

    def __post_init__(self):
        for name, bits in (("vendor_id", 16), ("device_id", 16), ("revision_id", 8),
                           ("class_code", 24), ("subsystem_vendor_id", 16),
                           ("subsystem_id", 16)):
            _check_int(name, getattr(self, name), bits)
        if self.vendor_id == 0xFFFF:
            raise ValueError("vendor ID 0xFFFF is reserved: it means 'no function here'")


@dataclass(frozen=True)
class LinkParams:
    """What the Link Capabilities / Link Status registers report (PCIe Base §7.5.3.6-8).

    Parameters
    ----------
    speed : int
        Max (and current) link speed as an index into the Supported Link Speeds Vector:
        1 = 2.5 GT/s, 2 = 5.0 GT/s, 3 = 8.0 GT/s, 4 = 16.0 GT/s, 5 = 32.0 GT/s.
    width : int
        Maximum (and negotiated) link width in lanes.
    slot_clock : bool
        The device uses the reference clock the slot provides (Link Status bit 12).
    """
    speed: int = 1
    width: int = 1
    slot_clock: bool = True

    def __post_init__(self):
        if self.speed not in PcieCap.LINK_SPEEDS_GTS:
            raise ValueError(f"link speed {self.speed!r} is not one of "
                             f"{sorted(PcieCap.LINK_SPEEDS_GTS)} (PCIe Base §7.5.3.18)")
        if self.width not in PcieCap.LINK_WIDTHS:
            raise ValueError(f"link width x{self.width!r} is not one of "
                             f"{PcieCap.LINK_WIDTHS} (PCIe Base §7.5.3.6)")


@dataclass(frozen=True)
class VendorCapability:
    """One vendor-specific capability (ID 09h, PCI Local Bus 3.0 §6.8 / PCIe Base §7.9.4).

    Parameters
    ----------
    body : bytes
        The capability from byte 2 on: ``body[0]`` is the Capability Length, which must equal
        ``len(body) + 2``. Bytes 0 (ID) and 1 (Next Pointer) are filled in by the
        configuration space.
    forward : range
        Byte offsets inside the capability, whole DWs and not DW 0, that the configuration
        space does not answer itself: configuration reads and writes of these DWs go out on
        the function's ``cfg_ext`` register bus (for writable fields such as the
        ``VIRTIO_PCI_CAP_PCI_CFG`` window, virtio 1.2 §4.1.4.9). Other bytes are read-only.
    """
    body: bytes
    forward: range = field(default=range(0))

    def __post_init__(self):
        if not isinstance(self.body, (bytes, bytearray)) or len(self.body) < 1:
            raise TypeError(f"vendor capability body must be non-empty bytes, not {self.body!r}")
        if self.body[0] != len(self.body) + 2:
            raise ValueError(f"vendor capability length byte is {self.body[0]} but the "
                             f"capability is {len(self.body) + 2} bytes long")
        f = self.forward
        if not isinstance(f, range) or f.step != 1:
            raise TypeError(f"forward must be a contiguous range of byte offsets, not {f!r}")
        if len(f) and (f.start % 4 or f.stop % 4 or f.start < 4 or f.stop > self.size):
            raise ValueError(f"forward {f!r} must cover whole DWs after DW 0 inside the "
                             f"{self.size}-byte capability")

    @property
    def size(self) -> int:
        """Bytes the capability occupies, rounded up to whole DWs."""
        return (len(self.body) + 2 + 3) // 4 * 4

    def image(self, next_ptr: int) -> bytes:
        """The ``size`` bytes a host reads, forwarded DWs included as the body gives them:
        ID 09h, ``next_ptr``, the body, zero padding."""
        if not isinstance(next_ptr, int) or not 0 <= next_ptr <= 0xFF or next_ptr % 4:
            raise ValueError(f"next pointer {next_ptr!r} must be a DW-aligned byte offset")
        raw = bytes([CapId.VENDOR, next_ptr]) + bytes(self.body)
        return raw + bytes(self.size - len(raw))


def place_capabilities(sizes, start: int, end: int = 0x100) -> list[int]:
    """Offsets of capabilities of ``sizes`` bytes (multiples of 4) laid out back to back from
    ``start`` (DW aligned); ``ValueError`` if they pass ``end``."""
    if not isinstance(start, int) or start % 4 or not 0x40 <= start < end:
        raise ValueError(f"capabilities start {start!r} must be DW aligned in 0x40..{end - 1:#x}")
    offsets, offset = [], start
    for size in sizes:
        offsets.append(offset)
        offset += size
    if offset > end:
        raise ValueError(f"capabilities need {offset - start} bytes but only {end - start} fit "
                         f"between {start:#x} and {end:#x}")
    return offsets


def capability_chain(caps, start: int, end: int = 0x100) -> bytes:
    """The bytes of vendor capabilities ``caps`` placed back to back from ``start`` by
    :func:`place_capabilities`, each Next Pointer at the next and the last one 0 (PCI Local
    Bus 3.0 §6.7); forwarded DWs hold what the capability bodies give."""
    offsets = place_capabilities([cap.size for cap in caps], start, end)
    nexts = offsets[1:] + [0]
    return b"".join(cap.image(nxt) for cap, nxt in zip(caps, nexts))
