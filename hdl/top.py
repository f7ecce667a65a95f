"""The whole virtio-blk device behind the raw TLP streams: what a board or a simulation builds."""
from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.utils import exact_log2

from hdl.blk.ram_disk import RamDisk
from hdl.blk.virtio_blk_backend import VirtioBlkBackend
from hdl.virtio.spec import VIRTIO_BLK_SECTOR_BYTES
from hdl.virtio.virtio_pci_device import VirtioPciDevice, VirtioPciDeviceParams

__all__ = ["VirtioBlkDeviceParams", "VirtioBlkDevice"]

SECTOR = VIRTIO_BLK_SECTOR_BYTES


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class VirtioBlkDeviceParams:
    """Every parameter of the device, checked together.

    ``pci`` holds the PCIe function, DMA engine, transport and virtqueue engine parameters
    (:class:`~hdl.virtio.virtio_pci_device.VirtioPciDeviceParams`); its ``num_queues`` is
    also the virtio-blk ``num_queues`` (VIRTIO_BLK_F_MQ). The rest is the block device:

    Disk (:class:`~hdl.blk.ram_disk.RamDisk`)
        ``capacity`` in 512-byte sectors (a multiple of ``disk_banks * disk_stripe``),
        ``disk_banks``, ``disk_stripe``, ``disk_latency`` (cycles per bank, one per bank),
        ``disk_jitter``, ``disk_slots``, ``disk_init`` (initial contents or None for zeros).
    Requests (:class:`~hdl.blk.virtio_blk_backend.VirtioBlkBackend`)
        ``serial`` (the GET_ID string, at most 20 bytes), ``size_max``, ``blk_size``,
        ``max_requests`` (requests in service at once), ``max_descriptors`` (descriptors per
        request: ``seg_max`` is two fewer), ``max_chunk``, ``max_reads``, ``max_writes``.

    The defaults build a 128 KiB disk in four banks whose latencies differ by two orders of
    magnitude, so that requests finish out of order, which is when VIRTIO_F_IN_ORDER
    matters; the disk fits the block RAM of the smallest supported FPGA.
    """
    pci: VirtioPciDeviceParams = field(default_factory=VirtioPciDeviceParams)
    capacity: int = 256
    disk_banks: int = 4
    disk_stripe: int = 8
    disk_latency: tuple[int, ...] = (4, 40, 120, 400)
    disk_jitter: int = 16
    disk_slots: int = 16
    disk_init: bytes | None = field(default=None, repr=False)
    serial: bytes = b"virtio-inorder-0001"
    size_max: int = 65536
    blk_size: int = SECTOR
    max_requests: int = 16
    max_descriptors: int = 16
    max_chunk: int = 4096
    max_reads: int = 16
    max_writes: int = 16

    def __post_init__(self):
        if not isinstance(self.pci, VirtioPciDeviceParams):
            raise TypeError(f"pci must be a VirtioPciDeviceParams, not {self.pci!r}")
        for name in ("capacity", "disk_banks", "disk_stripe", "disk_slots", "size_max",
                     "max_requests", "max_descriptors", "max_chunk"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.serial, bytes) or len(self.serial) > 20:
            raise ValueError(f"serial must be at most 20 bytes (virtio 1.2 §5.2.6), not "
                             f"{self.serial!r}")
        if self.capacity % (self.disk_banks * self.disk_stripe):
            raise ValueError(f"capacity {self.capacity} must be a multiple of disk_banks * "
                             f"disk_stripe = {self.disk_banks * self.disk_stripe} sectors")
        if len(self.disk_latency) != self.disk_banks:
            raise ValueError(f"disk_latency gives {len(self.disk_latency)} latencies for "
                             f"{self.disk_banks} banks")
        if self.disk_init is not None and len(self.disk_init) != self.capacity * SECTOR:
            raise ValueError(f"disk_init is {len(self.disk_init)} bytes, the disk holds "
                             f"{self.capacity * SECTOR}")
        for name in ("disk_banks", "disk_stripe", "disk_jitter", "max_requests",
                     "max_descriptors", "max_chunk", "max_reads", "max_writes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two, not {value!r}")
        # The components check their own ranges again when the device is built.

    @property
    def capacity_bytes(self) -> int:
        return self.capacity * SECTOR

    def make_disk(self, tag_width: int) -> RamDisk:
        return RamDisk(width=self.pci.width, tag_width=tag_width, capacity=self.capacity,
                       banks=self.disk_banks, stripe=self.disk_stripe,
                       latency=tuple(self.disk_latency), jitter=self.disk_jitter,
                       slots=self.disk_slots, init=self.disk_init)

    def make_backend(self) -> VirtioBlkBackend:
        """The virtio-blk backend with its RAM disk, built from these parameters."""
        p = self.pci
        # The storage port's tags name request slots: log2(max_requests) bits.
        disk = self.make_disk(tag_width=exact_log2(self.max_requests))
        return VirtioBlkBackend(
            seq_width=p.seq_width, width=p.width, cfg_addr_width=p.device_cfg_addr_width,
            storage=disk, num_queues=p.num_queues, serial=self.serial,
            size_max=self.size_max, blk_size=self.blk_size, max_requests=self.max_requests,
            max_descriptors=self.max_descriptors, max_chunk=self.max_chunk,
            max_reads=self.max_reads, max_writes=self.max_writes)


class VirtioBlkDevice(VirtioPciDevice):
    """A virtio-blk PCIe function (virtio 1.2 §4.1, §5.2): PCIe function, DMA engine,
    virtio-pci transport, split-virtqueue engine with its in-order reorder buffers, the
    virtio-blk request engine and a RAM disk, behind the raw TLP streams.

    It is :class:`~hdl.virtio.virtio_pci_device.VirtioPciDevice` (same ports: ``rx``,
    ``tx``, ``credits``, ``function_reset`` and the observability outputs) with a
    :class:`~hdl.blk.virtio_blk_backend.VirtioBlkBackend` whose storage is a
    :class:`~hdl.blk.ram_disk.RamDisk`; see ``docs/device.md``.

    Reset: ``rst`` or ``function_reset`` reset everything but the disk's contents.

    Parameters
    ----------
    params : VirtioBlkDeviceParams
    """

    def __init__(self, params: VirtioBlkDeviceParams | None = None):
        params = VirtioBlkDeviceParams() if params is None else params
        if not isinstance(params, VirtioBlkDeviceParams):
            raise TypeError(f"params must be a VirtioBlkDeviceParams, not {params!r}")
        self.blk_params = params
        super().__init__(params.pci, params.make_backend())
