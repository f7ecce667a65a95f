"""The virtio-blk device configuration structure, served on the register bus."""
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from hdl.pcie.register_bus import RegisterBus
from hdl.virtio.spec import BlkConfig, BlkFeature, VIRTIO_BLK_SECTOR_BYTES, VirtioBlkConfig, \
    feature_mask

__all__ = ["BlkConfigSpace", "BLK_DEVICE_FEATURES"]

BLK_DEVICE_FEATURES = feature_mask(BlkFeature.SIZE_MAX, BlkFeature.SEG_MAX, BlkFeature.BLK_SIZE,
                                   BlkFeature.FLUSH, BlkFeature.MQ)
"""The virtio-blk feature bits this device offers (virtio 1.2 §5.2.3): the fields
``size_max``, ``seg_max``, ``blk_size`` and ``num_queues`` are valid, and VIRTIO_BLK_T_FLUSH
is served. The transport adds the device-independent bits (VERSION_1 and the ring bits)."""


class BlkConfigSpace(wiring.Component):
    """``struct virtio_blk_config`` (virtio 1.2 §5.2.4) as a register bus client
    (``hdl/pcie/register_bus.py``), for the transport's device configuration window.

    Every field is a constant of the design: ``capacity``, ``size_max``, ``seg_max``,
    ``blk_size`` and ``num_queues`` as given (their features are in
    :data:`BLK_DEVICE_FEATURES`); the fields of features not offered (geometry, topology,
    writeback, discard, write zeroes, secure erase) and the padding read as zero
    (§5.2.5.2), as does everything past the structure's 0x48 bytes. Writes are acknowledged
    and ignored: ``writeback`` is writable only with VIRTIO_BLK_F_CONFIG_WCE, which is not
    offered. Every access is acknowledged in the cycle it is presented. Nothing ever
    changes, so ``config_generation`` never needs to move.

    Reset: none needed (no state).

    Parameters
    ----------
    addr_width : int
        DW address width of the window (the structure needs at least 5, i.e. 128 bytes).
    capacity : int
        Disk size in 512-byte sectors.
    size_max : int
        Largest segment (descriptor) in bytes the driver should use.
    seg_max : int
        Most data segments per request.
    blk_size : int
        Logical block size in bytes: a power of two, at least 512.
    num_queues : int
        Request queues (1 to 65535).

    Attributes
    ----------
    bus : In(RegisterBus.Signature(addr_width=addr_width))
    """

    def __init__(self, *, addr_width: int = 10, capacity: int, size_max: int, seg_max: int,
                 blk_size: int = VIRTIO_BLK_SECTOR_BYTES, num_queues: int = 1):
        if not isinstance(addr_width, int) or (1 << addr_width) * 4 < BlkConfig.SIZE:
            raise ValueError(f"a window of addr_width {addr_width!r} cannot hold the "
                             f"{BlkConfig.SIZE}-byte virtio_blk_config")
        for name, value, high in (("capacity", capacity, 1 << 64), ("size_max", size_max, 1 << 32),
                                  ("seg_max", seg_max, 1 << 32),
                                  ("num_queues", num_queues, 1 << 16)):
            if not isinstance(value, int) or not 1 <= value < high:
                raise ValueError(f"{name} must be an integer from 1 to {high - 1}, not {value!r}")
        if (not isinstance(blk_size, int) or blk_size < VIRTIO_BLK_SECTOR_BYTES
                or blk_size & (blk_size - 1) or blk_size >= 1 << 32):
            raise ValueError(f"blk_size must be a power of two of at least "
                             f"{VIRTIO_BLK_SECTOR_BYTES}, not {blk_size!r}")
        self.capacity = capacity
        self.size_max = size_max
        self.seg_max = seg_max
        self.blk_size = blk_size
        self.num_queues = num_queues
        super().__init__({"bus": In(RegisterBus.Signature(addr_width=addr_width))})

    def image(self) -> bytes:
        """The structure's bytes, little-endian (§4.1.3)."""
        value = VirtioBlkConfig.const({
            "capacity": self.capacity,
            "size_max": self.size_max,
            "seg_max": self.seg_max,
            "blk_size": self.blk_size,
            "num_queues": self.num_queues,
        }).as_value().value
        return value.to_bytes(BlkConfig.SIZE, "little")

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        image = self.image()
        m.d.comb += bus.ack.eq(bus.valid)
        with m.Switch(bus.addr):
            for dw in range(BlkConfig.SIZE // 4):
                word = int.from_bytes(image[4 * dw:4 * dw + 4], "little")
                if word:
                    with m.Case(dw):
                        m.d.comb += bus.r_data.eq(word)
        return m
