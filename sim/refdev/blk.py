"""The reference virtio-blk device: a cocotbext-pcie device with no RTL behind it.

:class:`ReferenceBlkDevice` puts a :class:`~sim.refdev.function.VirtioPciFunction` (the
transport) together with :class:`BlkBackend`, which executes requests with the golden
virtio-blk model (:class:`sim.model.blk.BlkDeviceModel`, virtio 1.2 §5.2.6) on a RAM disk:

1. read the element's device-readable bytes (header, OUT data) by DMA;
2. wait a random latency, so requests complete out of order (a reset cuts the wait short
   and the request is dropped);
3. execute on the disk (the model decides the status and the used length, and the outcome
   of every malformed request as `docs/robustness.md` says);
4. write IN data / the GET_ID string and the status byte by DMA, only into device-writable
   buffers, and hand the written length back to the queue.

Its purpose is to run the driver model now, before the RTL exists, and later to sit beside
the RTL as a reference. Connect it like any cocotbext-pcie device::

    rc = RootComplex()
    device = ReferenceBlkDevice(RefDeviceConfig(num_queues=4))
    rc.make_port().connect(device)
    await rc.enumerate()
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from cocotb.triggers import First, Timer
from cocotbext.pcie.core import Device

from hdl.virtio.spec import DeviceType, Feature, feature_mask
from sim.model.blk import BlkDeviceConfig, BlkDeviceModel, Disk, scatter
from sim.model.virtqueue import Element

from .function import VirtioPciFunction

__all__ = ["RefDeviceConfig", "BlkBackend", "ReferenceBlkDevice", "DEVICE_INDEPENDENT_FEATURES"]

log = logging.getLogger(__name__)

DEVICE_INDEPENDENT_FEATURES = feature_mask(
    Feature.VERSION_1, Feature.IN_ORDER, Feature.INDIRECT_DESC, Feature.EVENT_IDX,
    Feature.ACCESS_PLATFORM, Feature.ORDER_PLATFORM)
"""What the device offers besides the virtio-blk bits (ARCHITECTURE.md)."""


@dataclass(frozen=True)
class RefDeviceConfig:
    """Parameters of the reference device.

    ``capacity`` in 512-byte sectors; ``serial`` the GET_ID string; ``size_max`` /
    ``seg_max`` / ``blk_size`` offered with their feature bits when not None;
    ``num_queues`` (MQ is offered when above 1); ``features_off`` removes offered bits;
    ``latency_ns`` the range of the uniform random backend latency; ``image`` the initial
    disk contents (zeros by default). ``max_batch``, ``suppress_while_busy`` and
    ``poll_interval_ns`` shape the queues (see :mod:`sim.refdev.queue`). ``link_speed`` /
    ``link_width`` set the cocotbext-pcie link model (1 = 2.5 GT/s).
    """
    capacity: int = 2048
    serial: bytes = b"virtio-inorder-ref"
    num_queues: int = 4
    max_queue_size: int = 256
    msix_vectors: int = 8
    size_max: int | None = 65536
    seg_max: int | None = 64
    blk_size: int | None = 512
    read_only: bool = False
    features_off: int = 0
    latency_ns: tuple[int, int] = (200, 10_000)
    image: bytes | None = None
    max_batch: int | None = None
    suppress_while_busy: bool = True
    poll_interval_ns: int | None = None
    bar_64bit: bool = False
    max_payload_size_supported: int = 1
    link_speed: int = 1
    link_width: int = 1

    def blk_config(self) -> BlkDeviceConfig:
        return BlkDeviceConfig(capacity=self.capacity, size_max=self.size_max,
                               seg_max=self.seg_max, blk_size=self.blk_size,
                               num_queues=self.num_queues if self.num_queues > 1 else None,
                               read_only=self.read_only)


class BlkBackend:
    """Executes virtio-blk requests with the golden model after a random latency.

    Parameters
    ----------
    config : RefDeviceConfig
    rng : random.Random
    """

    device_type = DeviceType.BLOCK

    def __init__(self, config: RefDeviceConfig, rng: random.Random):
        lo, hi = config.latency_ns
        if not 0 <= lo <= hi:
            raise ValueError(f"latency range {config.latency_ns} is not 0 <= lo <= hi")
        self.rng = rng
        self.latency_ns = (lo, hi)
        self.blk_config = config.blk_config()
        self.model = BlkDeviceModel(Disk(config.capacity, config.image), serial=config.serial,
                                    read_only=config.read_only, flush=self.blk_config.flush)
        self._config_bytes = bytearray(self.blk_config.encode())
        self.function: VirtioPciFunction | None = None
        self.executed = 0
        self.abandoned = 0

    @property
    def disk(self) -> Disk:
        return self.model.disk

    @property
    def features(self) -> int:
        return self.blk_config.features()

    def config_read(self, offset: int, length: int) -> bytes:
        return bytes(self._config_bytes[offset:offset + length]).ljust(length, b"\0")

    def config_write(self, offset: int, data: bytes) -> None:
        log.debug("write to virtio-blk configuration offset %#x ignored (no CONFIG_WCE)",
                  offset)

    def resize(self, capacity: int) -> None:
        """Change the disk size (contents kept up to the new size) and tell the driver
        through a configuration change (§5.2.4, §4.1.5.4)."""
        old = self.model.disk.image()
        image = old[:capacity * 512].ljust(capacity * 512, b"\0")
        self.model.disk = Disk(capacity, image)
        self._config_bytes[0:8] = capacity.to_bytes(8, "little")
        self.function.config_changed()

    async def execute(self, queue, element: Element) -> int | None:
        function = queue.function
        readable = b"".join([await function.dma_read(d.addr, d.len, control=False)
                             for d in element.descriptors if not d.write and d.len])
        latency = self.rng.randint(*self.latency_ns)
        if latency:
            await First(Timer(latency, "ns"), function.abort.wait())
        if function.abort.is_set():
            self.abandoned += 1
            return None
        outcome = self.model.handle(readable, element.writable_len)
        self.executed += 1
        for offset, data in outcome.writable_writes():
            for addr, piece in scatter(element.descriptors, offset, data):
                await function.dma_write(addr, piece, control=False)
        return outcome.written_len


class ReferenceBlkDevice(Device):
    """A virtio-blk PCIe device for cocotbext-pcie's root complex.

    Attributes
    ----------
    function : VirtioPciFunction
    backend : BlkBackend
    intx_level, intx_changed, intx_messages
        INTx, as :class:`sim.pcie_bridge.PcieBridge` presents the RTL's.
    """

    def __init__(self, config: RefDeviceConfig = RefDeviceConfig(),
                 rng: random.Random | None = None):
        super().__init__()
        self.config = config
        self.backend = BlkBackend(config, rng or random.Random(random.getrandbits(32)))
        offered = (DEVICE_INDEPENDENT_FEATURES | self.backend.features) & ~config.features_off
        self.function = VirtioPciFunction(
            backend=self.backend, device_features=offered, num_queues=config.num_queues,
            max_queue_size=config.max_queue_size, msix_vectors=config.msix_vectors,
            bar_64bit=config.bar_64bit,
            max_payload_size_supported=config.max_payload_size_supported,
            queue_options=dict(max_batch=config.max_batch,
                               suppress_while_busy=config.suppress_while_busy,
                               poll_interval_ns=config.poll_interval_ns))
        self.backend.function = self.function
        self.append_function(self.function)
        self.upstream_port.max_link_speed = config.link_speed
        self.upstream_port.max_link_width = config.link_width

    @property
    def intx_level(self) -> bool:
        return self.function.intx_level

    @property
    def intx_changed(self):
        return self.function.intx_changed

    @property
    def intx_messages(self) -> list:
        return self.function.intx_messages

    @property
    def offered_features(self) -> int:
        return self.function.device_features

    @property
    def disk(self) -> Disk:
        return self.backend.disk
