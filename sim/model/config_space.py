"""Golden model of the endpoint's Type 0 configuration space, written from the specifications.

Sources: PCI Express Base Specification 4.0 §7.5.1 (Type 0 header), §7.5.2 (Power
Management capability, with PCI Bus Power Management Interface 1.2 §3.2), §7.5.3 (PCI
Express capability), §7.7.2 (MSI-X capability); PCI Local Bus 3.0 §6.8 / PCIe Base §7.9.4
for the vendor-specific capability. The model lists, for a function with the given
parameters, which capabilities must be present and, byte by byte, the reset value and which
bits software may write (RW) or clear by writing one (RW1C). Everything else is read-only.

Implementation choices the specifications leave open, which the model states as facts of
this design (``docs/pcie-function.md``): no I/O BAR (I/O Space hardwired 0), no expansion
ROM, D0 and D3hot only with No_Soft_Reset set and no PME, no ASPM/Clock PM, no Completion
Timeout control, no FLR, no AER; Interrupt Pin INTA.

The capability *offsets* are not the spec's business: the test walks the list and hands the
offsets it found to :meth:`ConfigSpaceModel.image`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConfigSpaceModel", "ConfigImage", "CAP_PM", "CAP_PCIE", "CAP_MSIX", "CAP_VENDOR"]

CAP_PM = 0x01
CAP_PCIE = 0x10
CAP_MSIX = 0x11
CAP_VENDOR = 0x09


@dataclass
class ConfigImage:
    """Expected bytes 00h-FFh after reset, with per-bit write behaviour."""
    value: bytearray = field(default_factory=lambda: bytearray(256))
    rw: bytearray = field(default_factory=lambda: bytearray(256))
    rw1c: bytearray = field(default_factory=lambda: bytearray(256))
    external: set = field(default_factory=set)     # forwarded bytes (served outside)
    pmcsr: int | None = None                       # byte offset of PMCSR

    def put(self, offset: int, size: int, value: int, rw: int = 0, rw1c: int = 0) -> None:
        for i in range(size):
            self.value[offset + i] = (value >> (8 * i)) & 0xFF
            self.rw[offset + i] = (rw >> (8 * i)) & 0xFF
            self.rw1c[offset + i] = (rw1c >> (8 * i)) & 0xFF

    def dw(self, index: int) -> int:
        """Expected value of DW ``index`` (0 beyond 256 bytes: no extended capabilities)."""
        if index >= 64:
            return 0
        return int.from_bytes(self.value[4 * index:4 * index + 4], "little")

    def write(self, index: int, data: int, be: int) -> None:
        """Apply a configuration write of ``data`` with byte enables ``be`` to DW ``index``."""
        if index >= 64:
            return
        for i in range(4):
            if not be >> i & 1:
                continue
            off = 4 * index + i
            byte = (data >> (8 * i)) & 0xFF
            if off in self.external:
                self.value[off] = byte
                continue
            if off == self.pmcsr:
                # PowerState: only D0 (00b) and D3hot (11b) exist; a write of D1/D2 is
                # completed and discarded (PCI PM 1.2 §3.2.4).
                state = byte & 0b11
                if state not in (0b00, 0b11):
                    byte = (byte & ~0b11) | (self.value[off] & 0b11)
            old = self.value[off]
            new = (old & ~self.rw[off]) | (byte & self.rw[off])
            new &= ~(byte & self.rw1c[off])
            self.value[off] = new & 0xFF


@dataclass
class ConfigSpaceModel:
    """What the spec (plus this design's documented choices) says the space must hold.

    Parameters mirror :class:`hdl.pcie.pcie_function.PcieFunction`; ``vendor_caps`` is a list
    of ``(body, forward)`` with ``body`` the capability bytes from offset 2 on.
    """
    vendor_id: int = 0x1AF4
    device_id: int = 0x1042
    revision_id: int = 0x01
    class_code: int = 0x010000
    subsystem_vendor_id: int = 0x1AF4
    subsystem_id: int = 0x1100
    bar_size: int = 32768
    bar_64bit: bool = False
    msix_vectors: int = 0
    msix_table_offset: int = 0x4000
    msix_pba_offset: int = 0x5000
    vendor_caps: list = field(default_factory=list)
    max_payload_size_supported: int = 1
    ext_tag_supported: bool = True
    link_speed: int = 1
    link_width: int = 1
    slot_clock: bool = True

    def expected_capabilities(self) -> list[int]:
        """Capability IDs that must be in the list; vendor ones in the order given."""
        caps = [CAP_PM, CAP_PCIE]
        if self.msix_vectors:
            caps.append(CAP_MSIX)
        return caps + [CAP_VENDOR] * len(self.vendor_caps)

    def image(self, caps: list[tuple[int, int]]) -> ConfigImage:
        """The reset image for capabilities found at ``caps`` = [(id, offset), ...] in list order."""
        img = ConfigImage()
        # Type 0 header, §7.5.1.
        img.put(0x00, 2, self.vendor_id)
        img.put(0x02, 2, self.device_id)
        # Command §7.5.1.1.3: Memory Space [1], Bus Master [2], Parity Error Response [6],
        # SERR# Enable [8], Interrupt Disable [10]; I/O Space is 0 without an I/O BAR.
        img.put(0x04, 2, 0, rw=(1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 10))
        # Status §7.5.1.1.4: Capabilities List [4] = 1; RW1C: Master Data Parity Error [8],
        # Signaled Target Abort [11], Received Target Abort [12], Received Master Abort [13],
        # Detected Parity Error [15]. Interrupt Status [3] is read-only.
        img.put(0x06, 2, 1 << 4, rw1c=(1 << 8) | (1 << 11) | (1 << 12) | (1 << 13) | (1 << 15))
        img.put(0x08, 1, self.revision_id)
        img.put(0x09, 3, self.class_code)
        img.put(0x0C, 1, 0, rw=0xFF)        # Cache Line Size: RW, no effect (§7.5.1.1.7)
        img.put(0x0E, 1, 0x00)              # Header Type 0, single function
        # BAR0 §7.5.1.2.1: memory, non-prefetchable, type 00b (32-bit) or 10b (64-bit); the
        # address bits below the size are hardwired to zero.
        size_mask = self.bar_size - 1
        img.put(0x10, 4, 0b100 if self.bar_64bit else 0, rw=0xFFFF_FFFF & ~size_mask & ~0xF)
        if self.bar_64bit:
            img.put(0x14, 4, 0, rw=0xFFFF_FFFF)
        img.put(0x2C, 2, self.subsystem_vendor_id)
        img.put(0x2E, 2, self.subsystem_id)
        img.put(0x34, 1, caps[0][1] if caps else 0)
        img.put(0x3C, 1, 0, rw=0xFF)        # Interrupt Line
        img.put(0x3D, 1, 0x01)              # Interrupt Pin: INTA

        nexts = [off for _, off in caps[1:]] + [0]
        vendor_index = 0
        for (cap_id, off), next_ptr in zip(caps, nexts):
            img.put(off, 1, cap_id)
            img.put(off + 1, 1, next_ptr)
            if cap_id == CAP_PM:
                img.put(off + 2, 2, 0b011)                  # PMC: version 1.2, no PME
                img.put(off + 4, 2, 1 << 3, rw=0b11)         # PMCSR: No_Soft_Reset
                img.pmcsr = off + 4
            elif cap_id == CAP_PCIE:
                self._pcie(img, off)
            elif cap_id == CAP_MSIX:
                # Message Control §7.7.2.2: Table Size N-1 (RO), Function Mask [14], Enable [15].
                img.put(off + 2, 2, self.msix_vectors - 1, rw=(1 << 14) | (1 << 15))
                img.put(off + 4, 4, self.msix_table_offset)     # BIR 0
                img.put(off + 8, 4, self.msix_pba_offset)       # BIR 0
            elif cap_id == CAP_VENDOR and vendor_index < len(self.vendor_caps):
                body, forward = self.vendor_caps[vendor_index]
                vendor_index += 1
                for i, byte in enumerate(body):
                    img.put(off + 2 + i, 1, byte)
                for b in forward:
                    img.external.add(off + b)
        return img

    def _pcie(self, img: ConfigImage, off: int) -> None:
        img.put(off + 0x02, 2, 0x0002)          # version 2, Device/Port Type 0: Endpoint
        # Device Capabilities §7.5.3.3: MPS Supported [2:0], Extended Tag [5], Role-Based
        # Error Reporting [15] (must be 1).
        img.put(off + 0x04, 4, self.max_payload_size_supported
                | (1 << 5 if self.ext_tag_supported else 0) | 1 << 15)
        # Device Control §7.5.3.4: enables [3:0], Relaxed Ordering [4] (default 1), MPS [7:5],
        # Extended Tag [8] (RW only if supported), No Snoop [11] (default 1), MRRS [14:12]
        # (default 010b).
        img.put(off + 0x08, 2, (1 << 4) | (1 << 11) | (2 << 12),
                rw=0x000F | 0x0010 | 0x00E0 | (0x0100 if self.ext_tag_supported else 0)
                | 0x0800 | 0x7000)
        # Device Status §7.5.3.5: Unsupported Request Detected [3] RW1C.
        img.put(off + 0x0A, 2, 0, rw1c=1 << 3)
        # Link Capabilities §7.5.3.6: speed, width, ASPM Optionality Compliance [22].
        img.put(off + 0x0C, 4, self.link_speed | self.link_width << 4 | 1 << 22)
        # Link Control §7.5.3.7 (endpoint): ASPM Control [1:0], RCB [3], Common Clock [6],
        # Extended Synch [7].
        img.put(off + 0x10, 2, 0, rw=0x0003 | 0x0008 | 0x0040 | 0x0080)
        # Link Status §7.5.3.8: current speed, negotiated width, Slot Clock [12].
        img.put(off + 0x12, 2, self.link_speed | self.link_width << 4
                | (1 << 12 if self.slot_clock else 0))
        # Link Capabilities 2 §7.5.3.18: Supported Link Speeds Vector, all speeds up to max.
        img.put(off + 0x2C, 4, ((1 << self.link_speed) - 1) << 1)
        # Link Control 2 §7.5.3.19: Target Link Speed [3:0], default the max speed.
        img.put(off + 0x30, 2, self.link_speed, rw=0xF)
