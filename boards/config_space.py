"""Where the virtio vendor capabilities sit in configuration space when a PCIe core owns it.

The 7-series hard block implements the Type 0 header and its own capabilities at fixed
offsets (PG054, "PCI Configuration Space"): Power Management at 0x40, MSI at 0x48 (disabled
here), PCI Express at 0x60 and MSI-X at 0x9C, which ends at 0xA7. Its "user-defined
configuration space" option (``CONFIG.PCI_CFG_Space``, start ``CONFIG.PCI_CFG_Space_Addr``
in DWs) hands configuration reads and writes from that start up to 0xFF to user logic, as
CfgRd0/CfgWr0 TLPs on the receive stream, and points the Next Capability of the block's last
capability at the start. The device puts its virtio vendor capabilities there:

=====  ====  ===================================  ======================================
0xA8   16 B  ``VIRTIO_PCI_CAP_COMMON_CFG``        BAR0 + ``common_cfg_offset``
0xB8   20 B  ``VIRTIO_PCI_CAP_NOTIFY_CFG``        BAR0 + ``notify_offset``, multiplier
0xCC   16 B  ``VIRTIO_PCI_CAP_ISR_CFG``           BAR0 + ``isr_offset``
0xDC   16 B  ``VIRTIO_PCI_CAP_DEVICE_CFG``        BAR0 + ``device_cfg_offset``
0xEC   20 B  ``VIRTIO_PCI_CAP_PCI_CFG``           window written by the driver
=====  ====  ===================================  ======================================

88 bytes, exactly what 0xA8..0xFF holds. Each capability's ``cap_next`` points at the next,
the last one's is 0 (virtio 1.2 §4.1.4; PCI Local Bus 3.0 §6.7). The MSI-X table and PBA
stay in BAR0 at the device's offsets: the block's MSI-X capability is configured with them
(``CONFIG.MSIx_Table_Offset``/``MSIx_PBA_Offset``) and the device answers those BAR0
addresses itself, since the block implements only the capability structure.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hdl.pcie.spec import CapId
from hdl.virtio.spec import PciCapCfgType, VirtioBlkConfig, VirtioPciCap, VirtioPciCfgCap, \
    VirtioPciNotifyCap
from sim.layout import pack

if TYPE_CHECKING:
    from .device import DeviceParams

__all__ = ["PCIE7X_PM_CAP", "PCIE7X_PCIE_CAP", "PCIE7X_MSIX_CAP", "PCIE7X_USER_CFG_START",
           "USER_CFG_END", "virtio_capabilities"]

PCIE7X_PM_CAP = 0x40
"""Power Management capability of the 7-series block (PG054, PCI configuration space map)."""
PCIE7X_PCIE_CAP = 0x60
"""PCI Express capability of the 7-series block."""
PCIE7X_MSIX_CAP = 0x9C
"""MSI-X capability of the 7-series block (12 bytes, up to 0xA7)."""
PCIE7X_USER_CFG_START = 0xA8
"""First byte of the user-defined legacy configuration space (``PCI_CFG_Space_Addr`` = 0x2A DW)."""
USER_CFG_END = 0x100
"""End of the legacy configuration space; the extended space (0x100+) stays the block's."""


def _cap_bytes(layout, fields: dict) -> bytes:
    # Bit 8k of a virtio layout is byte k of the little-endian structure (hdl/virtio/spec.py).
    return pack(layout, fields).to_bytes(layout.size // 8, "little")


def virtio_capabilities(params: "DeviceParams", base: int = PCIE7X_USER_CFG_START) -> bytes:
    """The virtio vendor capability chain as bytes, to be placed at configuration offset
    ``base`` (DW aligned). Raises ``ValueError`` if it does not fit below 0x100."""
    if base % 4 or not 0x40 <= base < USER_CFG_END:
        raise ValueError(f"capability base {base:#x} must be DW aligned in 0x40..0xFF")
    blk_cfg_len = VirtioBlkConfig.size // 8
    entries = [
        (VirtioPciCap, PciCapCfgType.COMMON_CFG, params.common_cfg_offset,
         params.common_cfg_length, {}),
        (VirtioPciNotifyCap, PciCapCfgType.NOTIFY_CFG, params.notify_offset,
         params.num_queues * params.notify_off_multiplier,
         {"notify_off_multiplier": params.notify_off_multiplier}),
        (VirtioPciCap, PciCapCfgType.ISR_CFG, params.isr_offset, 1, {}),
        (VirtioPciCap, PciCapCfgType.DEVICE_CFG, params.device_cfg_offset, blk_cfg_len, {}),
        # The PCI configuration access window: bar/offset/length are written by the driver
        # (virtio 1.2 §4.1.4.9), so they start at 0.
        (VirtioPciCfgCap, PciCapCfgType.PCI_CFG, 0, 0, {"pci_cfg_data": 0}),
    ]
    total = sum(layout.size // 8 for layout, *_ in entries)
    if base + total > USER_CFG_END:
        raise ValueError(f"virtio capabilities need {total} bytes from {base:#x}, past "
                         f"the end of the legacy configuration space")
    out = bytearray()
    offset = base
    for i, (layout, cfg_type, bar_offset, length, extra) in enumerate(entries):
        size = layout.size // 8
        nxt = 0 if i == len(entries) - 1 else offset + size
        cap = {"cap_vndr": CapId.VENDOR, "cap_next": nxt, "cap_len": size,
               "cfg_type": cfg_type.value, "bar": 0, "id": 0, "padding": 0,
               "offset": bar_offset, "length": length}
        fields = cap if layout is VirtioPciCap else {"cap": cap, **extra}
        out += _cap_bytes(layout, fields)
        offset += size
    return bytes(out)
