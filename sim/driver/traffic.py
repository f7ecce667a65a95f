"""Counting what a device does to host memory, seen from the root complex.

:class:`TrafficMonitor` hooks the root complex's handlers of memory read and write
requests, so it sees every TLP any device sends towards host memory, the RTL's as well as
the reference device's. Each request is classified by the allocation it touches
(:class:`~sim.driver.memory.DmaKind`):

* **control**: descriptor tables, available and used rings, indirect tables: the
  virtqueue protocol itself;
* **payload**: the request buffers (virtio-blk header, data, status byte);
* **interrupt**: a write to the root complex's MSI region (an MSI-X message);
* **other**: anything outside the driver's allocations.

The driver's own MMIO to the device is counted separately by the transport
(:class:`~sim.driver.transport.MmioCounters`). INTx messages do not reach the root complex
model; their source (``sim.pcie_bridge.PcieBridge`` or the reference device) counts them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from cocotbext.pcie.core.tlp import TlpType

from .memory import HostMemory

__all__ = ["DeviceTraffic", "TrafficMonitor"]


@dataclass
class DeviceTraffic:
    """TLPs (and bytes) a device sent to host memory, by class."""
    control_reads: int = 0
    control_writes: int = 0
    payload_reads: int = 0
    payload_writes: int = 0
    interrupt_writes: int = 0
    other: int = 0
    control_read_bytes: int = 0
    control_write_bytes: int = 0
    payload_read_bytes: int = 0
    payload_write_bytes: int = 0

    @property
    def control_tlps(self) -> int:
        """Control-path requests: ring and descriptor reads and writes plus MSI-X messages
        (read completions are not counted; one read request is one transaction)."""
        return self.control_reads + self.control_writes + self.interrupt_writes

    def snapshot(self) -> DeviceTraffic:
        return DeviceTraffic(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __sub__(self, other: DeviceTraffic) -> DeviceTraffic:
        return DeviceTraffic(**{f.name: getattr(self, f.name) - getattr(other, f.name)
                                for f in fields(self)})


class TrafficMonitor:
    """Counts the memory requests devices send to the root complex ``rc``.

    Parameters
    ----------
    rc : cocotbext.pcie.core.RootComplex
    memory : HostMemory
        The driver's host memory, whose allocations say what an address is.

    Attributes
    ----------
    traffic : DeviceTraffic
    """

    def __init__(self, rc, memory: HostMemory):
        self.memory = memory
        self.traffic = DeviceTraffic()
        msi = rc.msi_region
        self._msi_base = msi.get_absolute_address(0)
        self._msi_end = self._msi_base + msi.size
        for fmt_type, is_write in ((TlpType.MEM_READ, False), (TlpType.MEM_READ_64, False),
                                   (TlpType.MEM_WRITE, True), (TlpType.MEM_WRITE_64, True)):
            rc.register_rx_tlp_handler(fmt_type, self._wrap(rc.rx_tlp_handler[fmt_type],
                                                            is_write))

    def _wrap(self, handler, is_write: bool):
        async def observed(tlp):
            self._count(tlp, is_write)
            await handler(tlp)
        return observed

    def _count(self, tlp, is_write: bool) -> None:
        addr = tlp.address
        t = self.traffic
        if self._msi_base <= addr < self._msi_end:
            if is_write:
                t.interrupt_writes += 1
            else:
                t.other += 1
            return
        alloc = self.memory.allocation_at(addr)
        if alloc is None:
            t.other += 1
            return
        length = tlp.get_be_byte_count()
        if alloc.kind.control:
            if is_write:
                t.control_writes += 1
                t.control_write_bytes += length
            else:
                t.control_reads += 1
                t.control_read_bytes += length
        elif is_write:
            t.payload_writes += 1
            t.payload_write_bytes += length
        else:
            t.payload_reads += 1
            t.payload_read_bytes += length
