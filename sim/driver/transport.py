"""virtio over PCI, modern interface: finding the device and its registers (virtio 1.2 §4.1).

:class:`VirtioPciTransport` is the register level of the driver, what Linux keeps in
``virtio_pci_modern_dev.c`` (``vp_modern_probe``, ``vp_modern_get_features``,
``vp_modern_queue_address``, ...). It works on a function the root complex has enumerated
(a ``cocotbext.pcie.core.pci.PciDevice``), whatever model sits behind it: the RTL through
``sim.pcie_bridge`` or the reference device of ``sim.refdev``.

* :func:`find_virtio_functions` walks the enumerated bus for virtio functions
  (vendor 1AF4h; a modern device has Device ID 1040h + device type, §4.1.2).
* :meth:`VirtioPciTransport.probe` enables memory decoding and bus mastering
  (``pci_enable_device``, ``pci_set_master``) and walks the capability list for the
  vendor-specific virtio capabilities (§4.1.4): for each ``cfg_type`` the first one whose
  ``bar`` is a memory BAR of the function is used, as ``virtio_pci_find_capability`` does,
  and its ``offset`` / ``length`` must lie inside that BAR (``vp_modern_map_capability``).
  The common configuration, notification and ISR capabilities are mandatory.
* Register accessors count every MMIO access of the driver (:class:`MmioCounters`), so
  that the driver's own traffic can be told apart from the device's DMA.

Multi-byte common configuration fields are accessed with their own width; a 64-bit field
is written as two 32-bit halves, low half first (``vp_iowrite64_twopart``, §4.1.3.1).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from cocotb.triggers import Timer

from hdl.pcie.spec import Cfg, CapId
from hdl.virtio.spec import (
    PCI_DEVICE_ID_BASE, PCI_VENDOR_ID, CommonCfg, DeviceStatus, PciCapCfgType, feature_word,
    notify_offset,
)

__all__ = ["VirtioCapability", "MmioCounters", "VirtioPciTransport", "NotVirtio",
           "find_virtio_functions", "COMMON_CFG_MIN_BYTES"]

log = logging.getLogger(__name__)

COMMON_CFG_MIN_BYTES = 0x38
"""The common configuration structure of virtio 1.0 (up to ``queue_device``), the least a
device may map; ``queue_notify_data`` and ``queue_reset`` were added by virtio 1.2."""

_MIN_LENGTH = {
    PciCapCfgType.COMMON_CFG: COMMON_CFG_MIN_BYTES,
    PciCapCfgType.NOTIFY_CFG: 2,
    PciCapCfgType.ISR_CFG: 1,
    PciCapCfgType.DEVICE_CFG: 0,
    PciCapCfgType.PCI_CFG: 0,       # not mapped: the window is in configuration space
}


class NotVirtio(Exception):
    """The function is not a usable modern virtio device."""


@dataclass(frozen=True)
class VirtioCapability:
    """One virtio vendor-specific capability as found in configuration space (§4.1.4)."""
    cfg_type: PciCapCfgType
    cap_offset: int             # where the capability sits in configuration space
    cap_len: int
    bar: int
    id: int
    offset: int                 # of the structure within the BAR
    length: int
    notify_off_multiplier: int | None = None


@dataclass
class MmioCounters:
    """Accesses the driver made to the device: configuration space DWs, BAR reads and
    writes (each one TLP), and the subsets that were doorbells, ISR reads and status polls."""
    config_reads: int = 0
    config_writes: int = 0
    mmio_reads: int = 0
    mmio_writes: int = 0
    notifies: int = 0
    isr_reads: int = 0
    status_polls: int = 0


def find_virtio_functions(rc, device_id: int | None = None) -> list:
    """Every enumerated non-bridge function with the virtio Vendor ID (and ``device_id``
    when given), in bus order."""
    found = []

    def walk(bus):
        for dev in bus.devices:
            if not dev.is_bridge() and dev.vendor_id == PCI_VENDOR_ID \
                    and (device_id is None or dev.device_id == device_id):
                found.append(dev)
        for child in bus.children:
            walk(child)

    walk(rc.host_bridge.bus)
    return found


def _dw_count(offset: int, length: int) -> int:
    return (offset + length + 3) // 4 - offset // 4


class VirtioPciTransport:
    """Register access to one modern virtio-pci function.

    Parameters
    ----------
    rc : cocotbext.pcie.core.RootComplex
    dev : cocotbext.pcie.core.pci.PciDevice
        The enumerated function (see :func:`find_virtio_functions`).
    status_poll_ns : int
        Time between two reads of ``device_status`` while waiting for a reset to finish
        (Linux sleeps 1 ms; a simulation can afford to poll faster).

    Attributes
    ----------
    caps : dict[PciCapCfgType, VirtioCapability]
        The capability used for each type, after :meth:`probe`.
    all_caps : list[VirtioCapability]
        Every virtio capability in list order.
    device_type : int
        The virtio device ID (2 for block).
    counters : MmioCounters
    """

    def __init__(self, rc, dev, *, status_poll_ns: int = 200):
        self.rc = rc
        self.dev = dev
        self.status_poll_ns = status_poll_ns
        self.caps: dict[PciCapCfgType, VirtioCapability] = {}
        self.all_caps: list[VirtioCapability] = []
        self.device_type = 0
        self.counters = MmioCounters()
        self._bar_windows: dict[int, object] = {}

    # --- probing -----------------------------------------------------------------------------
    async def probe(self) -> None:
        """``vp_modern_probe`` plus ``pci_enable_device`` / ``pci_set_master``."""
        dev = self.dev
        if dev.vendor_id != PCI_VENDOR_ID:
            raise NotVirtio(f"vendor {dev.vendor_id:#06x} is not virtio's {PCI_VENDOR_ID:#06x}")
        if not PCI_DEVICE_ID_BASE <= dev.device_id <= PCI_DEVICE_ID_BASE + 0x3F:
            raise NotVirtio(f"device ID {dev.device_id:#06x} is not a modern virtio device "
                            f"(1040h..107Fh, virtio 1.2 §4.1.2); transitional devices are "
                            f"not handled")
        self.device_type = dev.device_id - PCI_DEVICE_ID_BASE
        command = await self.config_read(Cfg.COMMAND, 2)
        wanted = command | Cfg.CMD_MEMORY_SPACE | Cfg.CMD_BUS_MASTER
        if wanted != command:
            await self.config_write(Cfg.COMMAND, wanted, 2)
        dev.is_busmaster = True         # keep cocotbext's record in step, as set_master does
        await self._walk_capabilities()
        for cfg_type in (PciCapCfgType.COMMON_CFG, PciCapCfgType.NOTIFY_CFG,
                         PciCapCfgType.ISR_CFG):
            if cfg_type not in self.caps:
                raise NotVirtio(f"no usable {cfg_type.name} capability (virtio 1.2 §4.1.4)")
        notify = self.caps[PciCapCfgType.NOTIFY_CFG]
        if notify.notify_off_multiplier is None:
            raise NotVirtio("the notification capability is shorter than "
                            "struct virtio_pci_notify_cap (virtio 1.2 §4.1.4.4)")
        log.info("virtio device type %d at %s: %s", self.device_type, dev.pcie_id,
                 ", ".join(f"{c.cfg_type.name} BAR{c.bar}+{c.offset:#x}/{c.length:#x}"
                           for c in self.caps.values()))

    async def _walk_capabilities(self) -> None:
        self.caps.clear()
        self.all_caps.clear()
        ptr = await self.config_read(Cfg.CAP_PTR, 1) & 0xFC
        seen = set()
        while ptr and ptr not in seen:
            seen.add(ptr)
            header = await self.config_read(ptr, 4)
            cap_id, next_ptr = header & 0xFF, (header >> 8) & 0xFC
            if cap_id == CapId.VENDOR:
                cap = await self._read_virtio_cap(ptr, (header >> 16) & 0xFF, header >> 24)
                if cap is not None:
                    self.all_caps.append(cap)
                    if cap.cfg_type not in self.caps and self._usable(cap):
                        self.caps[cap.cfg_type] = cap
            ptr = next_ptr

    async def _read_virtio_cap(self, ptr: int, cap_len: int, cfg_type: int
                               ) -> VirtioCapability | None:
        try:
            kind = PciCapCfgType(cfg_type)
        except ValueError:
            log.info("vendor capability at %#04x with unknown cfg_type %d skipped", ptr,
                     cfg_type)
            return None
        if cap_len < 16:
            log.warning("virtio capability at %#04x is %d bytes, shorter than "
                        "struct virtio_pci_cap", ptr, cap_len)
            return None
        word1 = await self.config_read(ptr + 4, 4)
        offset = await self.config_read(ptr + 8, 4)
        length = await self.config_read(ptr + 12, 4)
        multiplier = None
        if kind is PciCapCfgType.NOTIFY_CFG and cap_len >= 20:
            multiplier = await self.config_read(ptr + 16, 4)
        return VirtioCapability(kind, ptr, cap_len, word1 & 0xFF, (word1 >> 8) & 0xFF, offset,
                                length, multiplier)

    def _usable(self, cap: VirtioCapability) -> bool:
        if cap.cfg_type is PciCapCfgType.PCI_CFG:
            return True
        if cap.bar > 5 or not self.dev.bar_size[cap.bar] or self.dev.bar_raw[cap.bar] & 1:
            log.info("%s capability names BAR%d, which is not a memory BAR; skipped",
                     cap.cfg_type.name, cap.bar)
            return False
        minimum = _MIN_LENGTH.get(cap.cfg_type, 0)
        if cap.length < minimum or cap.offset + max(cap.length, minimum) \
                > self.dev.bar_size[cap.bar]:
            log.warning("%s capability (BAR%d offset %#x length %#x) does not fit its BAR "
                        "of %#x bytes or is shorter than %d bytes; skipped", cap.cfg_type.name,
                        cap.bar, cap.offset, cap.length, self.dev.bar_size[cap.bar], minimum)
            return False
        return True

    # --- configuration space -----------------------------------------------------------------
    async def config_read(self, offset: int, length: int) -> int:
        self.counters.config_reads += _dw_count(offset, length)
        return int.from_bytes(await self.dev.config_read(offset, length), "little")

    async def config_write(self, offset: int, value: int, length: int) -> None:
        self.counters.config_writes += _dw_count(offset, length)
        await self.dev.config_write(offset, value.to_bytes(length, "little"))

    # --- BAR regions ---------------------------------------------------------------------------
    def cap(self, cfg_type: PciCapCfgType) -> VirtioCapability:
        try:
            return self.caps[cfg_type]
        except KeyError:
            raise NotVirtio(f"the device has no {cfg_type.name} capability") from None

    async def read(self, cfg_type: PciCapCfgType, offset: int, length: int) -> int:
        """One MMIO read of ``length`` (1, 2 or 4) bytes at ``offset`` in a region."""
        cap = self.cap(cfg_type)
        self.counters.mmio_reads += 1
        data = await self.dev.bar_window[cap.bar].read(cap.offset + offset, length)
        return int.from_bytes(data, "little")

    async def write(self, cfg_type: PciCapCfgType, offset: int, value: int,
                    length: int) -> None:
        """One MMIO write of ``length`` (1, 2 or 4) bytes at ``offset`` in a region."""
        cap = self.cap(cfg_type)
        self.counters.mmio_writes += 1
        await self.dev.bar_window[cap.bar].write(cap.offset + offset,
                                                 value.to_bytes(length, "little"))

    async def common_read(self, field_offset: int) -> int:
        width = CommonCfg.WIDTH[field_offset]
        if width == 8:
            lo = await self.read(PciCapCfgType.COMMON_CFG, field_offset, 4)
            hi = await self.read(PciCapCfgType.COMMON_CFG, field_offset + 4, 4)
            return lo | hi << 32
        return await self.read(PciCapCfgType.COMMON_CFG, field_offset, width)

    async def common_write(self, field_offset: int, value: int) -> None:
        width = CommonCfg.WIDTH[field_offset]
        if width == 8:
            await self.write(PciCapCfgType.COMMON_CFG, field_offset, value & 0xFFFF_FFFF, 4)
            await self.write(PciCapCfgType.COMMON_CFG, field_offset + 4, value >> 32, 4)
        else:
            await self.write(PciCapCfgType.COMMON_CFG, field_offset, value, width)

    # --- device status (§2.1, §3.1.1) ------------------------------------------------------------
    async def get_status(self) -> DeviceStatus:
        return DeviceStatus(await self.common_read(CommonCfg.DEVICE_STATUS))

    async def set_status(self, status: int) -> None:
        await self.common_write(CommonCfg.DEVICE_STATUS, int(status))

    async def add_status(self, bits: int) -> DeviceStatus:
        """``virtio_add_status``: read the status, write it back with ``bits`` set."""
        status = await self.get_status() | bits
        await self.set_status(status)
        return DeviceStatus(status)

    async def reset(self, timeout_ns: int = 10_000_000) -> int:
        """``vp_reset``: write 0 and poll until the device reads 0 (§4.1.4.3.2). Returns the
        number of polls it took."""
        await self.set_status(0)
        waited = 0
        polls = 0
        while await self.get_status():
            polls += 1
            self.counters.status_polls += 1
            if waited >= timeout_ns:
                raise TimeoutError(f"device_status did not read 0 within {timeout_ns} ns of "
                                   f"the reset (virtio 1.2 §4.1.4.3.2)")
            await Timer(self.status_poll_ns, "ns")
            waited += self.status_poll_ns
        return polls

    # --- features (§2.2, §4.1.4.3) -----------------------------------------------------------
    async def get_features(self) -> int:
        """Both 32-bit windows of ``device_feature``."""
        features = 0
        for select in (0, 1):
            await self.common_write(CommonCfg.DEVICE_FEATURE_SELECT, select)
            features |= await self.common_read(CommonCfg.DEVICE_FEATURE) << (32 * select)
        return features

    async def get_driver_features(self) -> int:
        features = 0
        for select in (0, 1):
            await self.common_write(CommonCfg.DRIVER_FEATURE_SELECT, select)
            features |= await self.common_read(CommonCfg.DRIVER_FEATURE) << (32 * select)
        return features

    async def set_features(self, features: int) -> None:
        for select in (0, 1):
            await self.common_write(CommonCfg.DRIVER_FEATURE_SELECT, select)
            await self.common_write(CommonCfg.DRIVER_FEATURE, feature_word(features, select))

    # --- queues (§4.1.4.3, §4.1.5.1.3) --------------------------------------------------------
    async def num_queues(self) -> int:
        return await self.common_read(CommonCfg.NUM_QUEUES)

    async def select_queue(self, index: int) -> None:
        await self.common_write(CommonCfg.QUEUE_SELECT, index)

    async def queue_size(self, index: int) -> int:
        await self.select_queue(index)
        return await self.common_read(CommonCfg.QUEUE_SIZE)

    async def queue_enabled(self, index: int) -> bool:
        await self.select_queue(index)
        return bool(await self.common_read(CommonCfg.QUEUE_ENABLE))

    async def set_queue_size(self, index: int, size: int) -> None:
        await self.select_queue(index)
        await self.common_write(CommonCfg.QUEUE_SIZE, size)

    async def queue_address(self, index: int, desc: int, driver: int, device: int) -> None:
        await self.select_queue(index)
        await self.common_write(CommonCfg.QUEUE_DESC, desc)
        await self.common_write(CommonCfg.QUEUE_DRIVER, driver)
        await self.common_write(CommonCfg.QUEUE_DEVICE, device)

    async def queue_vector(self, index: int, vector: int) -> int:
        """Write ``queue_msix_vector`` and read it back (NO_VECTOR: the device refused)."""
        await self.select_queue(index)
        await self.common_write(CommonCfg.QUEUE_MSIX_VECTOR, vector)
        return await self.common_read(CommonCfg.QUEUE_MSIX_VECTOR)

    async def config_vector(self, vector: int) -> int:
        """Write ``config_msix_vector`` and read it back."""
        await self.common_write(CommonCfg.CONFIG_MSIX_VECTOR, vector)
        return await self.common_read(CommonCfg.CONFIG_MSIX_VECTOR)

    async def enable_queue(self, index: int) -> None:
        await self.select_queue(index)
        await self.common_write(CommonCfg.QUEUE_ENABLE, 1)

    async def notify_address(self, index: int) -> int:
        """Offset of the queue's doorbell in the notification region (§4.1.4.4)."""
        await self.select_queue(index)
        notify_off = await self.common_read(CommonCfg.QUEUE_NOTIFY_OFF)
        cap = self.cap(PciCapCfgType.NOTIFY_CFG)
        offset = notify_offset(0, notify_off, cap.notify_off_multiplier)
        if offset + 2 > cap.length:
            raise NotVirtio(f"queue {index} doorbell at notify offset {offset:#x} lies outside "
                            f"the {cap.length:#x}-byte notification region")
        return offset

    async def notify(self, index: int, notify_offset_: int) -> None:
        """``vp_notify``: write the 16-bit queue index at the queue's doorbell (§4.1.5.2)."""
        self.counters.notifies += 1
        await self.write(PciCapCfgType.NOTIFY_CFG, notify_offset_, index, 2)

    # --- ISR and device configuration ---------------------------------------------------------
    async def read_isr(self) -> int:
        """Read (and so clear) the ISR status byte (§4.1.4.5)."""
        self.counters.isr_reads += 1
        return await self.read(PciCapCfgType.ISR_CFG, 0, 1)

    async def generation(self) -> int:
        return await self.common_read(CommonCfg.CONFIG_GENERATION)

    async def config_get(self, offset: int, length: int) -> bytes:
        """``vp_get``: device configuration bytes with accesses of the field's width (an
        8-byte field as two 32-bit reads). No generation check; see :meth:`read_config`."""
        if length == 8:
            lo = await self.read(PciCapCfgType.DEVICE_CFG, offset, 4)
            hi = await self.read(PciCapCfgType.DEVICE_CFG, offset + 4, 4)
            return (lo | hi << 32).to_bytes(8, "little")
        if length in (1, 2, 4):
            value = await self.read(PciCapCfgType.DEVICE_CFG, offset, length)
            return value.to_bytes(length, "little")
        return b"".join([await self.config_get(offset + i, 1) for i in range(length)])

    async def read_config(self, fields: list[tuple[int, int]]) -> list[int]:
        """Read device configuration fields ``(offset, width)`` consistently: repeat while
        ``config_generation`` changed underneath (``virtio_cread`` with the generation loop,
        §2.5.1 / §4.1.4.3.1)."""
        while True:
            before = await self.generation()
            values = [int.from_bytes(await self.config_get(off, width), "little")
                      for off, width in fields]
            if await self.generation() == before:
                return values

    # --- the PCI configuration access capability (§4.1.4.9) ----------------------------------
    async def pci_cfg_read(self, bar: int, offset: int, length: int) -> int:
        """A BAR read through the ``VIRTIO_PCI_CAP_PCI_CFG`` window in configuration space."""
        cap = self.cap(PciCapCfgType.PCI_CFG)
        await self.config_write(cap.cap_offset + 4, bar, 1)
        await self.config_write(cap.cap_offset + 8, offset, 4)
        await self.config_write(cap.cap_offset + 12, length, 4)
        return await self.config_read(cap.cap_offset + 16, length)

    async def pci_cfg_write(self, bar: int, offset: int, value: int, length: int) -> None:
        """A BAR write through the ``VIRTIO_PCI_CAP_PCI_CFG`` window."""
        cap = self.cap(PciCapCfgType.PCI_CFG)
        await self.config_write(cap.cap_offset + 4, bar, 1)
        await self.config_write(cap.cap_offset + 8, offset, 4)
        await self.config_write(cap.cap_offset + 12, length, 4)
        await self.config_write(cap.cap_offset + 16, value, length)

    # --- interrupts at the PCI level -------------------------------------------------------------
    async def set_intx_disable(self, disable: bool) -> None:
        """Set or clear Command.Interrupt Disable (``pci_intx``)."""
        command = await self.config_read(Cfg.COMMAND, 2)
        wanted = (command | Cfg.CMD_INTERRUPT_DISABLE) if disable \
            else (command & ~Cfg.CMD_INTERRUPT_DISABLE)
        if wanted != command:
            await self.config_write(Cfg.COMMAND, wanted, 2)
