"""Where the virtio-pci structures sit in BAR0, and the capabilities that announce them.

:class:`TransportMap` is the single description of the modern virtio-pci layout (virtio 1.2
§4.1.4) that the transport, the PCIe function, the tests and the tools share: the four
register windows of BAR0 (common configuration, ISR status, device configuration,
notifications), the MSI-X Table and PBA next to them, and the five vendor-specific
capabilities (``struct virtio_pci_cap``) that point a driver at them, including the
``VIRTIO_PCI_CAP_PCI_CFG`` access window whose fields are forwarded to the transport.
"""
from __future__ import annotations

from dataclasses import dataclass

from hdl.pcie.params import VendorCapability
from hdl.pcie.register_bus import RegisterWindow
from hdl.virtio.spec import CommonCfg, PciCapCfgType

__all__ = ["TransportMap", "PCI_CFG_FORWARD", "PCI_CFG_CAP_INDEX", "WINDOW_NAMES"]

WINDOW_NAMES = ("common", "isr", "device", "notify")
"""Register window names, in BAR0 order of the default map; ``regs.<name>`` of the function."""

PCI_CFG_CAP_INDEX = 4
"""Position of the ``VIRTIO_PCI_CAP_PCI_CFG`` capability in :meth:`TransportMap.vendor_caps`."""

PCI_CFG_FORWARD = range(4, 20)
"""Bytes of the ``VIRTIO_PCI_CAP_PCI_CFG`` capability the configuration space forwards to the
transport: ``bar``/``id``/``padding`` (DW 1), ``offset``, ``length`` and ``pci_cfg_data``
(virtio 1.2 §4.1.4.9: the driver writes them)."""


def _is_power_of_two(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        and not value & (value - 1)


@dataclass(frozen=True)
class TransportMap:
    """The BAR0 map of a modern virtio-pci function (virtio 1.2 §4.1.4).

    Defaults are ``shared/design/ARCHITECTURE.md``'s: a 32 KiB BAR0 with the common
    configuration at 0000h, ISR status at 1000h, device configuration at 2000h, notifications
    at 3000h (4 KiB windows), the MSI-X Table at 4000h and the PBA at 5000h.

    Parameters
    ----------
    common_offset, isr_offset, device_offset, notify_offset : int
        Byte offsets of the four windows in BAR0, multiples of ``window_size``.
    window_size : int
        Size of each window, a power of two from 64 bytes (the common configuration
        structure is 60 bytes, §4.1.4.3) to 64 KiB.
    notify_off_multiplier : int
        Bytes between two queues' doorbells (§4.1.4.4): a power of two of at least 4, so
        every queue has a DW of its own.
    msix_table_offset, msix_pba_offset : int
        Where the function places the MSI-X Table and PBA (outside the windows).
    bar_size : int
        BAR0 size, a power of two holding all of the above.
    """
    common_offset: int = 0x0000
    isr_offset: int = 0x1000
    device_offset: int = 0x2000
    notify_offset: int = 0x3000
    window_size: int = 0x1000
    notify_off_multiplier: int = 4
    msix_table_offset: int = 0x4000
    msix_pba_offset: int = 0x5000
    bar_size: int = 0x8000

    def __post_init__(self):
        if not _is_power_of_two(self.window_size) or not 64 <= self.window_size <= 0x10000:
            raise ValueError(f"window_size must be a power of two from 64 to 65536 bytes, not "
                             f"{self.window_size!r}")
        if not _is_power_of_two(self.notify_off_multiplier) or self.notify_off_multiplier < 4:
            raise ValueError(f"notify_off_multiplier must be a power of two of at least 4 (one "
                             f"DW per queue), not {self.notify_off_multiplier!r}")
        if not _is_power_of_two(self.bar_size):
            raise ValueError(f"bar_size must be a power of two, not {self.bar_size!r}")
        windows = self.windows()      # RegisterWindow checks alignment
        for w in windows:
            if w.end > self.bar_size:
                raise ValueError(f"window {w.name!r} at {w.offset:#x} does not fit the "
                                 f"{self.bar_size:#x}-byte BAR0")
        for i, a in enumerate(windows):
            for b in windows[i + 1:]:
                if a.overlaps(b):
                    raise ValueError(f"windows {a.name!r} and {b.name!r} overlap")
        for name in ("msix_table_offset", "msix_pba_offset"):
            offset = getattr(self, name)
            if not isinstance(offset, int) or not 0 <= offset < self.bar_size or offset % 8:
                raise ValueError(f"{name} must be an 8-byte aligned offset inside BAR0, not "
                                 f"{offset!r}")
            if any(w.offset <= offset < w.end for w in windows):
                raise ValueError(f"{name} {offset:#x} lies inside a virtio window")

    @property
    def offsets(self) -> dict[str, int]:
        return {"common": self.common_offset, "isr": self.isr_offset,
                "device": self.device_offset, "notify": self.notify_offset}

    def windows(self) -> list[RegisterWindow]:
        """The four register windows, for :class:`~hdl.pcie.pcie_function.PcieFunction`."""
        return [RegisterWindow(name, self.offsets[name], self.window_size)
                for name in WINDOW_NAMES]

    def max_queues(self) -> int:
        """Most queues whose doorbells fit the notification window."""
        return self.window_size // self.notify_off_multiplier

    def vendor_caps(self) -> list[VendorCapability]:
        """The five virtio vendor-specific capabilities (``struct virtio_pci_cap``, §4.1.4).

        In order: common configuration (§4.1.4.3), notifications (§4.1.4.4, with
        ``notify_off_multiplier``), ISR status (§4.1.4.5), device configuration (§4.1.4.6),
        PCI configuration access (§4.1.4.9; its ``bar``, ``offset``, ``length`` and
        ``pci_cfg_data`` start at 0 and are served by the transport through ``cfg_ext``).
        Each structure's ``length`` is the whole window, which is at least as long as the
        structure it holds (§4.1.4.3.1 needs the 60 bytes of ``virtio_pci_common_cfg``).
        """
        if self.window_size < CommonCfg.SIZE:
            raise ValueError("the common configuration window is shorter than the structure")
        return [
            _virtio_cap(PciCapCfgType.COMMON_CFG, self.common_offset, self.window_size),
            _virtio_cap(PciCapCfgType.NOTIFY_CFG, self.notify_offset, self.window_size,
                        self.notify_off_multiplier.to_bytes(4, "little")),
            _virtio_cap(PciCapCfgType.ISR_CFG, self.isr_offset, self.window_size),
            _virtio_cap(PciCapCfgType.DEVICE_CFG, self.device_offset, self.window_size),
            _virtio_cap(PciCapCfgType.PCI_CFG, 0, 0, bytes(4), forward=PCI_CFG_FORWARD),
        ]


def _virtio_cap(cfg_type: PciCapCfgType, offset: int, length: int, extra: bytes = b"",
                forward: range = range(0)) -> VendorCapability:
    # struct virtio_pci_cap from cap_len on: cap_len, cfg_type, bar, id, padding[2],
    # offset (le32), length (le32), then the type's own fields. Every structure is in BAR0.
    body = bytes([16 + len(extra), cfg_type.value, 0, 0, 0, 0]) \
        + offset.to_bytes(4, "little") + length.to_bytes(4, "little") + extra
    return VendorCapability(body, forward=forward)
