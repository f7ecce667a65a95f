"""The endpoint function as the project's device will present it, for tests and ``sim.lspci``.

Identity and BAR0 map follow ``shared/design/ARCHITECTURE.md``: 32 KiB BAR0 with the virtio
common configuration at 0000h, ISR at 1000h, device configuration at 2000h, notifications at
3000h (each a 4 KiB register window), MSI-X Table at 4000h and PBA at 5000h. Until the virtio
transport exists, :func:`virtio_vendor_caps` builds the five virtio-pci capabilities it will
pass (virtio 1.2 §4.1.4: ``struct virtio_pci_cap``), the ``VIRTIO_PCI_CAP_PCI_CFG`` window's
``bar``/``offset``/``length``/``pci_cfg_data`` DWs forwarded to ``cfg_ext``.
"""
from __future__ import annotations

from hdl.pcie.params import LinkParams, VendorCapability
from hdl.pcie.pcie_function import PcieFunction
from hdl.pcie.register_bus import RegisterWindow

__all__ = ["WINDOWS", "VIRTIO_CFG_TYPES", "virtio_vendor_caps", "example_function"]

WINDOWS = [
    RegisterWindow("common", 0x0000, 0x1000),
    RegisterWindow("isr", 0x1000, 0x1000),
    RegisterWindow("device", 0x2000, 0x1000),
    RegisterWindow("notify", 0x3000, 0x1000),
]

# cfg_type values (virtio 1.2 §4.1.4).
VIRTIO_CFG_TYPES = {1: "CommonCfg", 2: "Notify", 3: "ISR", 4: "DeviceCfg", 5: "PCICfg"}

NOTIFY_OFF_MULTIPLIER = 4


def _virtio_cap(cfg_type: int, bar: int, offset: int, length: int, extra: bytes = b"",
                forward: range = range(0)) -> VendorCapability:
    # struct virtio_pci_cap from cap_len on: cap_len, cfg_type, bar, id, padding[2],
    # offset (le32), length (le32), then the type's extra fields.
    body = bytes([16 + len(extra), cfg_type, bar, 0, 0, 0]) + offset.to_bytes(4, "little") \
        + length.to_bytes(4, "little") + extra
    return VendorCapability(body, forward=forward)


def virtio_vendor_caps() -> list[VendorCapability]:
    """The five virtio-pci capabilities for the BAR0 map above."""
    return [
        _virtio_cap(1, 0, 0x0000, 0x1000),
        _virtio_cap(2, 0, 0x3000, 0x1000, NOTIFY_OFF_MULTIPLIER.to_bytes(4, "little")),
        _virtio_cap(3, 0, 0x1000, 0x1000),
        _virtio_cap(4, 0, 0x2000, 0x1000),
        # bar, offset, length and pci_cfg_data are written by the driver (§4.1.4.9).
        _virtio_cap(5, 0, 0, 0, bytes(4), forward=range(4, 20)),
    ]


def example_function(*, width: int = 64, bar_64bit: bool = False, msix_vectors: int = 4,
                     link_speed: int = 1, link_width: int = 1, max_read_dw: int = 16
                     ) -> PcieFunction:
    """The function with the project's identity, BAR0 map and virtio capabilities."""
    return PcieFunction(width=width, bar_size=0x8000, bar_64bit=bar_64bit, windows=WINDOWS,
                        msix_vectors=msix_vectors, msix_table_offset=0x4000,
                        msix_pba_offset=0x5000, vendor_caps=virtio_vendor_caps(),
                        link=LinkParams(speed=link_speed, width=link_width),
                        max_read_dw=max_read_dw)
