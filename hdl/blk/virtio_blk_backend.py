"""The virtio-blk device backend: request engine, storage and device configuration."""
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.blk.blk_config_space import BLK_DEVICE_FEATURES, BlkConfigSpace
from hdl.blk.blk_request_engine import BlkRequestEngine
from hdl.blk.storage_port import StorageSignature
from hdl.virtio.device_backend import DeviceBackendSignature
from hdl.virtio.spec import VIRTIO_BLK_SECTOR_BYTES

__all__ = ["VirtioBlkBackend"]


class VirtioBlkBackend(wiring.Component):
    """A virtio-blk device (virtio 1.2 §5.2) as a device backend of the virtio-pci core.

    :class:`~hdl.blk.blk_request_engine.BlkRequestEngine` serves the requests,
    :class:`~hdl.blk.blk_config_space.BlkConfigSpace` the device configuration window, and
    ``storage`` holds the disk: a component with a storage port (``storage``,
    ``In(StorageSignature(...))``, see ``hdl/blk/storage_port.py``) and a ``capacity``
    attribute, such as :class:`~hdl.blk.ram_disk.RamDisk`, built with this backend's
    ``width`` and ``tag_width``; or None, and then the storage port is a port of this
    backend (``storage``) for a backend that lives elsewhere (external memory), whose size
    is ``capacity``.

    Its ports are the device-backend contract of the virtio-pci device core (elements in,
    one completion per element, its own DMA channels, the device configuration window as a
    register bus client, the negotiated features, device reset / idle, configuration
    change, needs-reset): ``elem``, ``done``, ``rd[0]`` (header and OUT data reads),
    ``wr[0]`` (IN data, GET_ID data, status writes), ``cfg``, ``features``, ``reset``,
    ``idle``, ``config_changed``, ``needs_reset``; with the Python attributes
    ``read_channels = 1``, ``write_channels = 1`` and ``device_features`` =
    :data:`~hdl.blk.blk_config_space.BLK_DEVICE_FEATURES` (SIZE_MAX, SEG_MAX, BLK_SIZE,
    FLUSH, MQ).

    The configuration advertises ``seg_max = max_descriptors - 2`` (a request's data
    segments plus its header and status descriptors fit the engine's per-request
    descriptor store); ``size_max`` and ``blk_size`` as given; ``num_queues`` as given (it
    should equal the virtqueue engine's). The negotiated ``features`` change nothing: a
    driver that did not negotiate FLUSH does not send it, and one that did not negotiate
    SIZE_MAX / SEG_MAX is still served (only past ``max_descriptors`` segments does a
    request fail, with IOERR). The configuration never changes (``config_changed`` is 0).

    Device reset: ``reset`` / ``idle`` as the request engine's; the storage keeps its
    contents (a virtio reset does not erase the disk). ``needs_reset``: a status write
    failed (the driver cannot learn the request's outcome); cleared by the reset.

    Parameters
    ----------
    seq_width : int
        The virtqueue engine's ``seq_width``.
    width : int
        DMA data width, 64 or 128.
    cfg_addr_width : int
        DW address width of the device configuration window (10 for the 4 KiB window).
    storage : wiring.Component or None
        The disk (see above).
    capacity : int or None
        Disk size in sectors when ``storage`` is None (else ``storage.capacity``).
    num_queues, serial, size_max, blk_size : see :class:`BlkConfigSpace` and
        :class:`BlkRequestEngine` (``serial``: the GET_ID string).
    max_requests, max_descriptors, max_chunk, max_reads, max_writes : int
        The request engine's.

    Attributes
    ----------
    tag_width : int
        Tag width of the storage port: log2(``max_requests``).
    """

    read_channels = 1
    write_channels = 1
    device_features = BLK_DEVICE_FEATURES

    def __init__(self, *, seq_width: int, width: int = 64, cfg_addr_width: int = 10,
                 storage: wiring.Component | None = None, capacity: int | None = None,
                 num_queues: int = 1, serial: bytes | str = b"virtio-inorder",
                 size_max: int = 65536, blk_size: int = VIRTIO_BLK_SECTOR_BYTES,
                 max_requests: int = 16, max_descriptors: int = 16, max_chunk: int = 4096,
                 max_reads: int = 16, max_writes: int = 16):
        if storage is None:
            if capacity is None:
                raise ValueError("capacity is needed when the storage is outside the backend "
                                 "(storage=None)")
        else:
            if capacity is not None and capacity != storage.capacity:
                raise ValueError(f"capacity {capacity} contradicts the storage's "
                                 f"{storage.capacity} sectors")
            capacity = storage.capacity
        self.engine = BlkRequestEngine(
            seq_width=seq_width, width=width, capacity=capacity, serial=serial,
            max_requests=max_requests, max_descriptors=max_descriptors, max_chunk=max_chunk,
            max_reads=max_reads, max_writes=max_writes)
        self.tag_width = self.engine.tag_width
        port = StorageSignature(width=width, tag_width=self.tag_width)
        if storage is not None:
            member = storage.signature.members.get("storage") if hasattr(storage, "signature") \
                else None
            if member is None or member.flow != In or member.signature != port:
                raise TypeError(f"storage must be a component with a port storage: "
                                f"In({port!r}), not {storage!r}")
        self.storage_block = storage
        self.capacity = capacity
        self.config = BlkConfigSpace(addr_width=cfg_addr_width, capacity=capacity,
                                     size_max=size_max, seg_max=max_descriptors - 2,
                                     blk_size=blk_size, num_queues=num_queues)
        members = dict(DeviceBackendSignature(
            seq_width=seq_width, width=width, cfg_addr_width=cfg_addr_width,
            read_channels=self.read_channels, write_channels=self.write_channels).members)
        if storage is None:
            members["storage"] = Out(port)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.config = config = self.config
        wiring.connect(m, wiring.flipped(self.elem), engine.elem)
        wiring.connect(m, engine.done, wiring.flipped(self.done))
        wiring.connect(m, engine.rd, wiring.flipped(self.rd[0]))
        wiring.connect(m, engine.wr, wiring.flipped(self.wr[0]))
        wiring.connect(m, wiring.flipped(self.cfg), config.bus)
        if self.storage_block is None:
            wiring.connect(m, engine.storage, wiring.flipped(self.storage))
        else:
            m.submodules.storage = self.storage_block
            wiring.connect(m, engine.storage, self.storage_block.storage)
        m.d.comb += [
            engine.reset.eq(self.reset),
            self.idle.eq(engine.idle),
            self.needs_reset.eq(engine.needs_reset),
            self.config_changed.eq(0),
        ]
        return m
