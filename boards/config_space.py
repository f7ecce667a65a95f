"""Where the virtio vendor capabilities sit in configuration space when a PCIe core owns it.

The 7-series hard block implements the Type 0 header and its own capabilities at fixed
offsets (PG054, "PCI Configuration Space"): Power Management at 0x40, MSI at 0x48 (disabled
here), PCI Express at 0x60 and MSI-X at 0x9C, which ends at 0xA7. Its "user-defined
configuration space" option (``CONFIG.PCI_CFG_Space``, start ``CONFIG.PCI_CFG_Space_Addr``
in DWs) hands configuration reads and writes from that start up to 0xFF to user logic, as
CfgRd0/CfgWr0 TLPs on the receive stream, and points the Next Capability of the block's last
capability at the start. The device puts its virtio vendor capabilities there:

=====  ====  ===================================  ======================================
0xA8   16 B  ``VIRTIO_PCI_CAP_COMMON_CFG``        BAR0 + ``common_cfg_offset``, 4 KiB
0xB8   20 B  ``VIRTIO_PCI_CAP_NOTIFY_CFG``        BAR0 + ``notify_offset``, 4 KiB, multiplier
0xCC   16 B  ``VIRTIO_PCI_CAP_ISR_CFG``           BAR0 + ``isr_offset``, 4 KiB
0xDC   16 B  ``VIRTIO_PCI_CAP_DEVICE_CFG``        BAR0 + ``device_cfg_offset``, 4 KiB
0xEC   20 B  ``VIRTIO_PCI_CAP_PCI_CFG``           window written by the driver
=====  ====  ===================================  ======================================

88 bytes, exactly what 0xA8..0xFF holds. Each structure's ``length`` is its whole 4 KiB
window of BAR0 (:class:`hdl.virtio.transport_map.TransportMap`), at least the structure.
Each capability's ``cap_next`` points at the next, the last one's is 0 (virtio 1.2 §4.1.4;
PCI Local Bus 3.0 §6.7). The MSI-X table and PBA stay in BAR0 at the device's offsets: the block's MSI-X capability is configured with them
(``CONFIG.MSIx_Table_Offset``/``MSIx_PBA_Offset``) and the device answers those BAR0
addresses itself, since the block implements only the capability structure.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hdl.pcie.params import capability_chain

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


def virtio_capabilities(params: "DeviceParams", base: int = PCIE7X_USER_CFG_START) -> bytes:
    """The virtio vendor capability chain as bytes, placed at configuration offset ``base``
    (DW aligned), exactly as the device built by :func:`boards.device.make_top_pcie7x`
    serves it before the driver writes the PCI configuration access window: the same
    :meth:`hdl.virtio.transport_map.TransportMap.vendor_caps` laid out by the same
    :func:`hdl.pcie.params.capability_chain` as
    :class:`hdl.pcie.user_config_space.UserConfigSpace` does. Raises ``ValueError`` if it does
    not fit below 0x100."""
    from .device import device_params     # boards.device imports this module

    if base % 4 or not 0x40 <= base < USER_CFG_END:
        raise ValueError(f"capability base {base:#x} must be DW aligned in 0x40..0xFF")
    pci = device_params(params).pci
    caps = pci.transport_map.vendor_caps()
    total = sum(cap.size for cap in caps)
    if base + total > USER_CFG_END:
        raise ValueError(f"virtio capabilities need {total} bytes from {base:#x}, past "
                         f"the end of the legacy configuration space")
    return capability_chain(caps, base)
