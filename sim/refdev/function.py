"""The reference device's PCIe function: the virtio-pci modern transport (virtio 1.2 §4.1).

:class:`VirtioPciFunction` is a cocotbext-pcie ``MemoryEndpoint`` with the identity, BAR0 map
and capabilities of ``shared/design/ARCHITECTURE.md`` (the same map as
``sim/example_function.py``): configuration space with PM, PCI Express, MSI-X and the five
virtio vendor capabilities, and BAR0 (32 KiB) holding

=========  =================================================================
0x0000     common configuration (§4.1.4.3)
0x1000     ISR status, read to clear (§4.1.4.5)
0x2000     device configuration (the backend's, §4.1.4.6)
0x3000     notifications, one 16-bit doorbell per queue every 4 bytes (§4.1.4.4)
0x4000     MSI-X Table, 16 bytes per vector
0x5000     MSI-X Pending Bit Array
=========  =================================================================

What the device does, register by register:

* ``device_feature`` shows the offered features through ``device_feature_select`` 0 and 1;
  ``driver_feature`` is stored. Setting FEATURES_OK succeeds only if the driver's features
  are a subset of the offered ones and include VERSION_1; otherwise FEATURES_OK stays clear
  (§2.2.2, §3.1.1).
* Writing 0 to ``device_status`` resets the device (§2.4, §4.1.4.3.2): every queue stops
  fetching, backend work waiting for its latency is abandoned, DMA in progress finishes,
  and only then do the registers return to their reset values and ``device_status`` read 0.
  Until then it reads its old value.
* ``config_msix_vector`` / ``queue_msix_vector`` take a vector inside the MSI-X table or
  NO_VECTOR; anything else reads back NO_VECTOR (§4.1.5.1.2).
* Per queue (``queue_select``): ``queue_size`` (power of two up to the maximum, written
  before enable), the three area addresses (read-only once enabled), ``queue_enable``
  (1 enables; 0 is ignored, the driver must not write it), ``queue_notify_off`` = the queue
  index. A nonexistent queue reads ``queue_size`` 0.
* A doorbell for a queue that does not exist or is not enabled, or before DRIVER_OK, is
  ignored and counted. Queues start fetching at DRIVER_OK (§3.1.1 step 8).
* Interrupts (§4.1.5.3, §4.1.5.4): with MSI-X enabled, the queue's or configuration
  vector's message (held in the PBA while masked); otherwise the ISR bit and INTx, level
  high while ISR is not zero, unless Command.Interrupt Disable is set. INTx changes are
  recorded like ``sim.pcie_bridge.PcieBridge`` records the RTL's INTx messages
  (``intx_level``, ``intx_changed``, ``intx_messages``), since the root complex model cannot
  route INTx messages.
* A queue stopped on bad input sets DEVICE_NEEDS_RESET and sends a configuration change
  notification once DRIVER_OK is set (§2.1.2, `docs/robustness.md`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cocotb
from cocotb.triggers import Event
from cocotb.utils import get_sim_time
from cocotbext.pcie.core import MemoryEndpoint

from hdl.pcie.spec import MSIX_ENTRY_BYTES
from hdl.virtio.spec import (
    MAX_QUEUE_SIZE, VIRTIO_MSI_NO_VECTOR, CommonCfg, DeviceStatus, Feature, IsrStatus,
    PCI_VENDOR_ID, PciCapCfgType, feature_word, pci_device_id,
)
from sim.example_function import NOTIFY_OFF_MULTIPLIER, WINDOWS
from sim.model.split_ring import SplitRingLayout

from .caps import HookedMsixCapability, VirtioPciCfgCapability, VirtioVendorCapability
from .queue import DeviceVirtqueue, QueueStats

__all__ = ["VirtioPciFunction", "FunctionStats", "BAR0_SIZE", "MSIX_TABLE_OFFSET",
           "MSIX_PBA_OFFSET", "REGION_OFFSETS"]

log = logging.getLogger(__name__)

BAR0_SIZE = 0x8000
REGION_OFFSETS = {w.name: w.offset for w in WINDOWS}
"""common 0x0000, isr 0x1000, device 0x2000, notify 0x3000 (ARCHITECTURE.md)."""
REGION_SIZE = 0x1000
MSIX_TABLE_OFFSET = 0x4000
MSIX_PBA_OFFSET = 0x5000

CLASS_CODE = 0x010000               # mass storage, SCSI (what QEMU's virtio-blk shows)
SUBSYSTEM_ID = 0x1100               # ARCHITECTURE.md (>= 0x40, §4.1.2.1)
REVISION_ID = 1                     # non-transitional: 1 or higher (§4.1.2.1)


@dataclass
class FunctionStats:
    """What the function saw and did. ``status_writes`` lists every value the driver wrote
    to ``device_status``, in order; DMA is split into control (rings, descriptors) and
    payload (request buffers) by who asked for it."""
    status_writes: list[int] = field(default_factory=list)
    resets: int = 0
    features_refused: int = 0
    notifies_ignored: int = 0
    bad_register_writes: int = 0
    isr_reads: int = 0
    msix_sent: int = 0
    msix_held: int = 0
    intx_asserts: int = 0
    config_notifications: int = 0
    dma_control_reads: int = 0
    dma_control_writes: int = 0
    dma_payload_reads: int = 0
    dma_payload_writes: int = 0
    dma_during_reset: int = 0


@dataclass
class _QueueRegs:
    size: int
    msix_vector: int = VIRTIO_MSI_NO_VECTOR
    enable: int = 0
    desc: int = 0
    driver: int = 0
    device: int = 0


class VirtioPciFunction(MemoryEndpoint):
    """A modern virtio-pci function with a device-type backend.

    Parameters
    ----------
    backend : object
        ``device_type`` (int), ``features`` (offered device-type bits), ``config_read(offset,
        length) -> bytes``, ``config_write(offset, data)`` and ``async execute(queue,
        element)``.
    device_features : int
        Everything offered (device-independent and device-type bits).
    num_queues : int
    max_queue_size : int
        What ``queue_size`` reads after reset (a power of two up to 32768).
    msix_vectors : int
        MSI-X Table Size; 0 builds no MSI-X capability (INTx only).
    bar_64bit : bool
    max_payload_size_supported : int
        Device Capabilities MPS Supported encoding (1: 256 bytes, like the RTL).
    queue_options : dict
        Passed to every :class:`~sim.refdev.queue.DeviceVirtqueue` (``max_batch``,
        ``suppress_while_busy``, ``poll_interval_ns``).
    """

    def __init__(self, *, backend, device_features: int, num_queues: int,
                 max_queue_size: int = 256, msix_vectors: int = 8, bar_64bit: bool = False,
                 max_payload_size_supported: int = 1, queue_options: dict | None = None):
        if not 1 <= num_queues <= REGION_SIZE // NOTIFY_OFF_MULTIPLIER:
            raise ValueError(f"num_queues {num_queues} outside 1..{REGION_SIZE // 4}")
        if max_queue_size < 1 or max_queue_size > MAX_QUEUE_SIZE \
                or max_queue_size & (max_queue_size - 1):
            raise ValueError(f"max_queue_size {max_queue_size} is not a power of two in "
                             f"1..{MAX_QUEUE_SIZE} (virtio 1.2 §2.7)")
        if not 0 <= msix_vectors <= 64:
            raise ValueError(f"msix_vectors {msix_vectors} outside 0..64")
        if not device_features >> Feature.VERSION_1 & 1:
            raise ValueError("a modern device must offer VIRTIO_F_VERSION_1 (virtio 1.2 §6.2)")
        super().__init__()
        self.backend = backend
        self.device_features = device_features
        self.num_queues = num_queues
        self.max_queue_size = max_queue_size
        self.msix_vectors = msix_vectors
        self.queue_options = dict(queue_options or {})

        self.vendor_id = PCI_VENDOR_ID
        self.device_id = pci_device_id(backend.device_type)
        self.revision_id = REVISION_ID
        self.class_code = CLASS_CODE
        self.subsystem_vendor_id = PCI_VENDOR_ID
        self.subsystem_id = SUBSYSTEM_ID
        self.interrupt_pin = 1      # INTA
        self.pcie_cap.max_payload_size_supported = max_payload_size_supported
        self.pcie_cap.extended_tag_supported = True
        self.add_region(BAR0_SIZE, read=self._bar0_read, write=self._bar0_write,
                        ext=bar_64bit)

        self.msix_cap = None
        if msix_vectors:
            self.msix_cap = HookedMsixCapability(self._msix_control_changed)
            self.msix_cap.msix_table_size = msix_vectors - 1
            self.msix_cap.msix_table_bar_indicator_register = 0
            self.msix_cap.msix_table_offset = MSIX_TABLE_OFFSET
            self.msix_cap.msix_pba_bar_indicator_register = 0
            self.msix_cap.msix_pba_offset = MSIX_PBA_OFFSET
            self.register_capability(self.msix_cap)
        self._msix_table = bytearray(MSIX_ENTRY_BYTES * msix_vectors)
        for v in range(msix_vectors):
            self._msix_table[MSIX_ENTRY_BYTES * v + 12] = 1     # Vector Control: masked
        self._msix_pending = 0
        notify_extra = NOTIFY_OFF_MULTIPLIER.to_bytes(4, "little")
        for cfg_type, name, extra in ((PciCapCfgType.COMMON_CFG, "common", b""),
                                      (PciCapCfgType.NOTIFY_CFG, "notify", notify_extra),
                                      (PciCapCfgType.ISR_CFG, "isr", b""),
                                      (PciCapCfgType.DEVICE_CFG, "device", b"")):
            self.register_capability(VirtioVendorCapability(
                cfg_type, 0, REGION_OFFSETS[name], REGION_SIZE, extra))
        self.register_capability(VirtioPciCfgCapability(self._cfg_bar_read,
                                                        self._cfg_bar_write))

        self.stats = FunctionStats()
        self.intx_level = False
        self.intx_changed = Event()
        self.intx_messages: list[tuple[float, bool]] = []
        self.abort = Event()
        self.config_generation = 0
        self.retired_queue_stats: list[QueueStats] = []
        self._resetting = False
        self._reset_registers()

    # --- state ---------------------------------------------------------------------------------
    def _reset_registers(self) -> None:
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.config_msix_vector = VIRTIO_MSI_NO_VECTOR
        self.status = 0
        self.queue_select = 0
        self.queue_regs = [_QueueRegs(self.max_queue_size) for _ in range(self.num_queues)]
        self.engines: dict[int, DeviceVirtqueue] = {}
        self.isr = 0
        self._update_intx()

    @property
    def resetting(self) -> bool:
        return self._resetting

    @property
    def msix_enabled(self) -> bool:
        return self.msix_cap is not None and self.msix_cap.msix_enable

    def queue_stats(self) -> list[QueueStats]:
        """Statistics of every queue engine since the start, past resets included."""
        return self.retired_queue_stats + [e.stats for e in self.engines.values()]

    # --- configuration space hooks ---------------------------------------------------------------
    async def write_config_register(self, reg, data, mask):
        await super().write_config_register(reg, data, mask)
        self._update_intx()

    # --- BAR0 ------------------------------------------------------------------------------------
    async def _bar0_read(self, offset: int, length: int) -> bytes:
        return self._read_bar0(offset, length)

    async def _bar0_write(self, offset: int, data: bytes) -> None:
        self._write_bar0(offset, bytes(data))

    def _cfg_bar_read(self, bar: int, offset: int, length: int) -> bytes:
        return self._read_bar0(offset, length) if bar == 0 and offset + length <= BAR0_SIZE \
            else bytes(length)

    def _cfg_bar_write(self, bar: int, offset: int, data: bytes) -> None:
        if bar == 0 and offset + len(data) <= BAR0_SIZE:
            self._write_bar0(offset, data)

    def _read_bar0(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while length:
            base = offset & ~(REGION_SIZE - 1)
            n = min(length, base + REGION_SIZE - offset)
            out += self._read_region(base, offset - base, n)
            offset += n
            length -= n
        return bytes(out)

    def _write_bar0(self, offset: int, data: bytes) -> None:
        while data:
            base = offset & ~(REGION_SIZE - 1)
            n = min(len(data), base + REGION_SIZE - offset)
            self._write_region(base, offset - base, data[:n])
            offset += n
            data = data[n:]

    def _read_region(self, base: int, offset: int, length: int) -> bytes:
        if base == REGION_OFFSETS["common"]:
            return bytes(self._common_bytes()[offset:offset + length].ljust(length, b"\0"))
        if base == REGION_OFFSETS["isr"]:
            return self._read_isr(offset, length)
        if base == REGION_OFFSETS["device"]:
            return bytes(self.backend.config_read(offset, length))
        if base == MSIX_TABLE_OFFSET:
            return bytes(self._msix_table[offset:offset + length].ljust(length, b"\0"))
        if base == MSIX_PBA_OFFSET:
            pba = self._msix_pending.to_bytes(8, "little")
            return pba[offset:offset + length].ljust(length, b"\0")
        return bytes(length)

    def _write_region(self, base: int, offset: int, data: bytes) -> None:
        if base == REGION_OFFSETS["common"]:
            self._write_common(offset, data)
        elif base == REGION_OFFSETS["device"]:
            self.backend.config_write(offset, data)
        elif base == REGION_OFFSETS["notify"]:
            self._notify(offset, data)
        elif base == MSIX_TABLE_OFFSET:
            self._write_msix_table(offset, data)
        else:
            log.debug("write to read-only or unmapped BAR0 offset %#x ignored", base + offset)

    # --- common configuration (§4.1.4.3) ---------------------------------------------------------
    def _field_values(self) -> dict[int, int]:
        q = self.queue_regs[self.queue_select] if self.queue_select < self.num_queues else None
        return {
            CommonCfg.DEVICE_FEATURE_SELECT: self.device_feature_select,
            CommonCfg.DEVICE_FEATURE: feature_word(self.device_features,
                                                   self.device_feature_select),
            CommonCfg.DRIVER_FEATURE_SELECT: self.driver_feature_select,
            CommonCfg.DRIVER_FEATURE: feature_word(self.driver_features,
                                                   self.driver_feature_select),
            CommonCfg.CONFIG_MSIX_VECTOR: self.config_msix_vector,
            CommonCfg.NUM_QUEUES: self.num_queues,
            CommonCfg.DEVICE_STATUS: self.status,
            CommonCfg.CONFIG_GENERATION: self.config_generation & 0xFF,
            CommonCfg.QUEUE_SELECT: self.queue_select,
            CommonCfg.QUEUE_SIZE: q.size if q else 0,
            CommonCfg.QUEUE_MSIX_VECTOR: q.msix_vector if q else VIRTIO_MSI_NO_VECTOR,
            CommonCfg.QUEUE_ENABLE: q.enable if q else 0,
            CommonCfg.QUEUE_NOTIFY_OFF: self.queue_select if q else 0,
            CommonCfg.QUEUE_DESC: q.desc if q else 0,
            CommonCfg.QUEUE_DRIVER: q.driver if q else 0,
            CommonCfg.QUEUE_DEVICE: q.device if q else 0,
            CommonCfg.QUEUE_NOTIFY_DATA: 0,     # NOTIF_CONFIG_DATA is not offered
            CommonCfg.QUEUE_RESET: 0,           # RING_RESET is not offered
        }

    def _common_bytes(self) -> bytearray:
        raw = bytearray(CommonCfg.SIZE)
        for offset, value in self._field_values().items():
            width = CommonCfg.WIDTH[offset]
            raw[offset:offset + width] = value.to_bytes(width, "little")
        return raw

    def _write_common(self, offset: int, data: bytes) -> None:
        current = self._common_bytes()
        end = offset + len(data)
        for field_offset, width in sorted(CommonCfg.WIDTH.items()):
            lo, hi = max(offset, field_offset), min(end, field_offset + width)
            if lo >= hi:
                continue
            merged = bytearray(current[field_offset:field_offset + width])
            merged[lo - field_offset:hi - field_offset] = data[lo - offset:hi - offset]
            self._write_field(field_offset, int.from_bytes(merged, "little"))

    def _write_field(self, offset: int, value: int) -> None:
        q = self.queue_regs[self.queue_select] if self.queue_select < self.num_queues else None
        if offset == CommonCfg.DEVICE_FEATURE_SELECT:
            self.device_feature_select = value
        elif offset == CommonCfg.DRIVER_FEATURE_SELECT:
            self.driver_feature_select = value
        elif offset == CommonCfg.DRIVER_FEATURE:
            if self.driver_feature_select in (0, 1):
                shift = 32 * self.driver_feature_select
                self.driver_features = (self.driver_features & ~(0xFFFF_FFFF << shift)) \
                    | value << shift
        elif offset == CommonCfg.CONFIG_MSIX_VECTOR:
            self.config_msix_vector = self._valid_vector(value)
        elif offset == CommonCfg.DEVICE_STATUS:
            self._write_status(value)
        elif offset == CommonCfg.QUEUE_SELECT:
            self.queue_select = value
        elif q is None:
            self._bad_write(f"queue register {offset:#x} of nonexistent queue "
                            f"{self.queue_select}")
        elif offset == CommonCfg.QUEUE_MSIX_VECTOR:
            q.msix_vector = self._valid_vector(value)
        elif offset == CommonCfg.QUEUE_ENABLE:
            if value == 1 and not q.enable:
                self._enable_queue(self.queue_select, q)
            elif value != 1:
                self._bad_write(f"queue_enable = {value} (the driver must not write 0, "
                                f"virtio 1.2 §4.1.4.3.2)")
        elif q.enable and offset in (CommonCfg.QUEUE_SIZE, CommonCfg.QUEUE_DESC,
                                     CommonCfg.QUEUE_DRIVER, CommonCfg.QUEUE_DEVICE):
            self._bad_write(f"queue {self.queue_select} register {offset:#x} written while "
                            f"enabled")
        elif offset == CommonCfg.QUEUE_SIZE:
            if 1 <= value <= self.max_queue_size and not value & (value - 1):
                q.size = value
            else:
                self._bad_write(f"queue_size {value} is not a power of two up to "
                                f"{self.max_queue_size}")
        elif offset == CommonCfg.QUEUE_DESC:
            q.desc = value
        elif offset == CommonCfg.QUEUE_DRIVER:
            q.driver = value
        elif offset == CommonCfg.QUEUE_DEVICE:
            q.device = value
        # everything else is read-only

    def _bad_write(self, what: str) -> None:
        self.stats.bad_register_writes += 1
        log.warning("ignored: %s", what)

    def _valid_vector(self, value: int) -> int:
        return value if value < self.msix_vectors else VIRTIO_MSI_NO_VECTOR

    def _write_status(self, value: int) -> None:
        self.stats.status_writes.append(value)
        if value == 0:
            self._start_reset()
            return
        if self._resetting:
            self._bad_write(f"device_status = {value:#x} while a reset is in progress")
            return
        old = self.status
        new = value | (old & DeviceStatus.DEVICE_NEEDS_RESET)
        if new & DeviceStatus.FEATURES_OK and not old & DeviceStatus.FEATURES_OK \
                and not self._features_acceptable():
            new &= ~DeviceStatus.FEATURES_OK
            self.stats.features_refused += 1
        self.status = new
        if new & DeviceStatus.DRIVER_OK and not old & DeviceStatus.DRIVER_OK:
            for engine in self.engines.values():
                engine.start()

    def _features_acceptable(self) -> bool:
        unknown = self.driver_features & ~self.device_features
        if unknown or not self.driver_features >> Feature.VERSION_1 & 1:
            log.info("FEATURES_OK refused for driver features %#x (offered %#x)",
                     self.driver_features, self.device_features)
            return False
        return True

    def _enable_queue(self, index: int, q: _QueueRegs) -> None:
        if not self.status & DeviceStatus.FEATURES_OK:
            self._bad_write(f"queue {index} enabled before FEATURES_OK")
            return
        try:
            layout = SplitRingLayout(q.size, q.desc, q.driver, q.device)
        except ValueError as why:
            self._bad_write(f"queue {index} not enabled: {why}")
            return
        q.enable = 1
        f = self.driver_features
        engine = DeviceVirtqueue(
            self, index, layout, backend=self.backend,
            in_order=bool(f >> Feature.IN_ORDER & 1), event_idx=bool(f >> Feature.EVENT_IDX & 1),
            indirect=bool(f >> Feature.INDIRECT_DESC & 1), **self.queue_options)
        self.engines[index] = engine
        if self.status & DeviceStatus.DRIVER_OK:
            engine.start()

    # --- reset (§2.4) ------------------------------------------------------------------------------
    def _start_reset(self) -> None:
        if self._resetting:
            return
        self._resetting = True
        self.abort.set()
        for engine in self.engines.values():
            engine.stop()
        cocotb.start_soon(self._finish_reset())

    async def _finish_reset(self) -> None:
        for engine in list(self.engines.values()):
            await engine.drained()
            self.retired_queue_stats.append(engine.stats)
        self._reset_registers()
        self.abort.clear()
        self._resetting = False
        self.stats.resets += 1

    # --- notifications (§4.1.4.4, §4.1.5.2) -------------------------------------------------------
    def _notify(self, offset: int, data: bytes) -> None:
        index = offset // NOTIFY_OFF_MULTIPLIER
        engine = self.engines.get(index)
        if engine is None or not self.status & DeviceStatus.DRIVER_OK or self._resetting:
            self.stats.notifies_ignored += 1
            return
        engine.doorbell()

    # --- ISR and INTx (§4.1.4.5, §4.1.5.3) ---------------------------------------------------------
    def _read_isr(self, offset: int, length: int) -> bytes:
        self.stats.isr_reads += 1
        value = self.isr if offset == 0 else 0
        if offset == 0:
            self.isr = 0
            self._update_intx()
        return bytes([value]) + bytes(length - 1)

    def _update_intx(self) -> None:
        self.interrupt_status = bool(self.isr) and not self.msix_enabled
        level = self.interrupt_status and not self.interrupt_disable
        if level != self.intx_level:
            self.intx_level = level
            self.intx_messages.append((get_sim_time("ns"), level))
            if level:
                self.stats.intx_asserts += 1
            self.intx_changed.set()

    # --- MSI-X (PCIe Base §6.1.4) -------------------------------------------------------------------
    def _vector_masked(self, vector: int) -> bool:
        return self.msix_cap.msix_function_mask \
            or bool(self._msix_table[MSIX_ENTRY_BYTES * vector + 12] & 1)

    def _write_msix_table(self, offset: int, data: bytes) -> None:
        self._msix_table[offset:offset + len(data)] = data[:max(0, len(self._msix_table)
                                                                - offset)]
        self._release_pending()

    def _msix_control_changed(self) -> None:
        self._update_intx()
        self._release_pending()

    def _release_pending(self) -> None:
        if not self.msix_enabled:
            return
        for vector in range(self.msix_vectors):
            if self._msix_pending >> vector & 1 and not self._vector_masked(vector):
                self._msix_pending &= ~(1 << vector)
                cocotb.start_soon(self._msix_send(vector))

    async def _msix_send(self, vector: int) -> None:
        if vector >= self.msix_vectors or not self.msix_enabled:
            return
        if self._vector_masked(vector):
            self._msix_pending |= 1 << vector
            self.stats.msix_held += 1
            return
        entry = self._msix_table[MSIX_ENTRY_BYTES * vector:MSIX_ENTRY_BYTES * (vector + 1)]
        address = int.from_bytes(entry[0:8], "little")
        data = int.from_bytes(entry[8:12], "little")
        self.stats.msix_sent += 1
        await self.msix_cap.issue_msix_interrupt(address, data)

    async def send_queue_interrupt(self, queue: DeviceVirtqueue) -> None:
        """A used buffer notification for ``queue`` (§4.1.5.3)."""
        if self.msix_enabled:
            vector = self.queue_regs[queue.index].msix_vector
            if vector != VIRTIO_MSI_NO_VECTOR:
                await self._msix_send(vector)
        else:
            self.isr |= IsrStatus.QUEUE
            self._update_intx()

    async def notify_config_change(self) -> None:
        """A configuration change notification (§4.1.5.4)."""
        self.stats.config_notifications += 1
        if self.msix_enabled:
            if self.config_msix_vector != VIRTIO_MSI_NO_VECTOR:
                await self._msix_send(self.config_msix_vector)
        else:
            self.isr |= IsrStatus.DEVICE_CONFIG
            self._update_intx()

    def config_changed(self) -> None:
        """The backend changed its configuration: bump ``config_generation`` and notify."""
        self.config_generation += 1
        if self.status & DeviceStatus.DRIVER_OK:
            cocotb.start_soon(self.notify_config_change())

    async def queue_error(self, queue: DeviceVirtqueue, error) -> None:
        """Queue ``queue`` stopped on bad driver input (`docs/robustness.md`)."""
        log.warning("queue %d stopped: %s", queue.index, error)
        self.status |= DeviceStatus.DEVICE_NEEDS_RESET
        if self.status & DeviceStatus.DRIVER_OK:
            await self.notify_config_change()

    # --- DMA -----------------------------------------------------------------------------------------
    async def dma_read(self, addr: int, length: int, *, control: bool) -> bytes:
        if control:
            self.stats.dma_control_reads += 1
        else:
            self.stats.dma_payload_reads += 1
        if self._resetting:
            self.stats.dma_during_reset += 1
        return await self.mem_read(addr, length)

    async def dma_write(self, addr: int, data: bytes, *, control: bool) -> None:
        if control:
            self.stats.dma_control_writes += 1
        else:
            self.stats.dma_payload_writes += 1
        if self._resetting:
            self.stats.dma_during_reset += 1
        await self.mem_write(addr, data)

