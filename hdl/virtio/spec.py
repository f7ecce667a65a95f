"""virtio constants, register maps and packed layouts, for the RTL, the models and the drivers.

Section numbers refer to the OASIS *Virtual I/O Device (VIRTIO) Version 1.2* specification
(Committee Specification 01); virtio 1.3 keeps the same numbering for everything used here.
Every module of the project takes virtio constants from this file.

Conventions:

* Bit numbers (feature bits) are :class:`enum.IntEnum` members, usable as plain integers.
* Values that sit in a hardware field are ``amaranth.lib.enum`` enumerations with a shape
  (:class:`VirtioBlkType`, :class:`PciCapCfgType`); flag sets are ``IntFlag`` with a shape so
  that RTL (``desc.flags & VirtqDescFlags.NEXT``) and Python models (plain ``int`` masks) use
  the same names.
* Packed formats are ``data.StructLayout`` objects named after the spec's C structures
  (``struct virtq_desc`` -> :data:`VirtqDesc`), fields in declaration order, so that bit
  ``8 * k`` of a layout is byte ``k`` of the little-endian structure in memory
  (virtio 1.2 §4.1.3: "All 64-bit, 32-bit and 16-bit fields are little-endian").
* Byte offsets of register fields are written out as constants (:class:`CommonCfg`,
  :class:`BlkConfig`) and can also be read from the layouts with :func:`field_bytes`; the
  unit tests check that the two agree.
"""
from amaranth.lib import data, enum

__all__ = [
    # feature bits and device status
    "Feature", "BlkFeature", "DeviceStatus", "feature_mask", "feature_word", "feature_names",
    # identity
    "DeviceType", "PCI_VENDOR_ID", "PCI_DEVICE_ID_BASE", "PCI_MIN_REVISION_ID",
    "PCI_MIN_SUBSYSTEM_ID", "pci_device_id",
    # PCI transport
    "PciCapCfgType", "VirtioPciCap", "VirtioPciNotifyCap", "VirtioPciCfgCap",
    "VirtioPciCommonCfg", "CommonCfg", "IsrStatus", "NotifyData", "VIRTIO_MSI_NO_VECTOR",
    "MAX_MSIX_VECTOR", "notify_offset",
    # split virtqueue
    "VirtqDescFlags", "VirtqAvailFlags", "VirtqUsedFlags", "VirtqDesc", "VirtqUsedElem",
    "VirtqAvailHeader", "VirtqUsedHeader", "MAX_QUEUE_SIZE", "VIRTQ_DESC_BYTES",
    "VIRTQ_AVAIL_ELEM_BYTES", "VIRTQ_USED_ELEM_BYTES", "DESC_TABLE_ALIGN", "AVAIL_RING_ALIGN",
    "USED_RING_ALIGN", "AVAIL_FLAGS_OFFSET", "AVAIL_IDX_OFFSET", "AVAIL_RING_OFFSET",
    "USED_FLAGS_OFFSET", "USED_IDX_OFFSET", "USED_RING_OFFSET", "check_queue_size",
    "desc_table_bytes", "avail_ring_bytes", "used_ring_bytes", "used_event_offset",
    "avail_event_offset", "vring_need_event",
    # virtio-blk
    "VirtioBlkType", "VirtioBlkStatus", "VirtioBlkReqHeader", "VirtioBlkGeometry",
    "VirtioBlkTopology", "VirtioBlkConfig", "BlkConfig", "VIRTIO_BLK_SECTOR_BYTES",
    "VIRTIO_BLK_ID_BYTES", "VIRTIO_BLK_REQ_HEADER_BYTES", "VIRTIO_BLK_STATUS_BYTES",
    # helpers
    "field_bytes",
]


# --- Feature bits (§2.2, §6) ------------------------------------------------------------------

class Feature(enum.IntEnum):
    """Device-independent feature bits (virtio 1.2 §6, "Reserved Feature Bits").

    Bits 24..40 are reserved for queue and feature-negotiation extensions (§2.2). The names
    are virtio 1.2's; ``RING_INDIRECT_DESC`` and ``RING_EVENT_IDX`` are the virtio 1.0 names
    of bits 28 and 29 (Linux still calls them ``VIRTIO_RING_F_*``) and are aliases.
    """
    INDIRECT_DESC = 28      # VIRTQ_DESC_F_INDIRECT may be used (§2.7.5.3)
    EVENT_IDX = 29          # used_event / avail_event (§2.7.7, §2.7.10)
    VERSION_1 = 32          # compliance with virtio 1.x; a device MUST offer it (§6.2)
    ACCESS_PLATFORM = 33    # device memory access may be limited or translated (IOMMU)
    RING_PACKED = 34        # packed virtqueue layout (§2.8); not offered by this device
    IN_ORDER = 35           # buffers used in the order made available (§2.7.9)
    ORDER_PLATFORM = 36     # driver must use barriers suitable for a hardware device
    SR_IOV = 37             # PCI SR-IOV capability present
    NOTIFICATION_DATA = 38  # driver notifications carry next_off / next_wrap (§2.9)
    NOTIF_CONFIG_DATA = 39  # driver notifications carry queue_notify_data (§4.1.5.2)
    RING_RESET = 40         # per-queue reset through queue_reset (§2.6.1)
    RING_INDIRECT_DESC = 28     # virtio 1.0 name of INDIRECT_DESC
    RING_EVENT_IDX = 29         # virtio 1.0 name of EVENT_IDX


class BlkFeature(enum.IntEnum):
    """virtio-blk feature bits (virtio 1.2 §5.2.3); bits 0 (BARRIER) and 7 (SCSI) are legacy."""
    SIZE_MAX = 1        # maximum size of one segment in size_max
    SEG_MAX = 2         # maximum number of segments of a request in seg_max
    GEOMETRY = 4        # disk geometry in geometry
    RO = 5              # device is read-only
    BLK_SIZE = 6        # block size of the disk in blk_size
    FLUSH = 9           # cache flush command (VIRTIO_BLK_T_FLUSH)
    TOPOLOGY = 10       # optimal I/O alignment in topology
    CONFIG_WCE = 11     # cache mode switchable through writeback
    MQ = 12             # more than one request queue, count in num_queues
    DISCARD = 13        # VIRTIO_BLK_T_DISCARD
    WRITE_ZEROES = 14   # VIRTIO_BLK_T_WRITE_ZEROES
    LIFETIME = 15       # VIRTIO_BLK_T_GET_LIFETIME
    SECURE_ERASE = 16   # VIRTIO_BLK_T_SECURE_ERASE


def feature_mask(*bits: int) -> int:
    """The 64-bit feature mask with the given bit numbers set, e.g.
    ``feature_mask(Feature.VERSION_1, Feature.IN_ORDER)``."""
    mask = 0
    for bit in bits:
        if not 0 <= int(bit) < 128:
            raise ValueError(f"feature bit {bit} is outside 0..127 (virtio 1.2 §2.2)")
        mask |= 1 << int(bit)
    return mask


def feature_word(features: int, select: int) -> int:
    """The 32 feature bits shown for ``device_feature_select`` / ``driver_feature_select``
    = ``select``: bits ``32 * select`` .. ``32 * select + 31`` (virtio 1.2 §4.1.4.3)."""
    if select < 0:
        raise ValueError(f"feature select must be non-negative, not {select}")
    return (features >> (32 * select)) & 0xFFFF_FFFF


def feature_names(features: int, device_features: type[enum.IntEnum] = BlkFeature) -> list[str]:
    """Names of the bits set in ``features``, lowest first: device-independent bits by their
    :class:`Feature` name, device-type bits by ``device_features`` (default virtio-blk),
    anything else as ``"bit N"``."""
    names = []
    for bit in range(features.bit_length()):
        if not (features >> bit) & 1:
            continue
        for kind in (Feature, device_features):
            try:
                names.append(kind(bit).name)
                break
            except ValueError:
                pass
        else:
            names.append(f"bit {bit}")
    return names


class DeviceStatus(enum.IntFlag, shape=8):
    """Bits of the device status field (virtio 1.2 §2.1). Writing 0 resets the device
    (§4.1.4.3); the device reads back 0 once the reset is complete."""
    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 64
    FAILED = 128


# --- Identity (§4.1.2, §5) ---------------------------------------------------------------------

class DeviceType(enum.IntEnum):
    """Virtio device IDs (virtio 1.2 §5, "Device Types"); only the ones this project uses."""
    NETWORK = 1     # appears in the spec's own example of PCI device IDs (§4.1.2)
    BLOCK = 2       # §5.2.1


PCI_VENDOR_ID = 0x1AF4
"""PCI Vendor ID of every virtio device (virtio 1.2 §4.1.2.1)."""

PCI_DEVICE_ID_BASE = 0x1040
"""A non-transitional device's PCI Device ID is 0x1040 + its virtio device ID (§4.1.2)."""

PCI_MIN_REVISION_ID = 1
"""Non-transitional devices SHOULD have a PCI Revision ID of 1 or higher (§4.1.2.1)."""

PCI_MIN_SUBSYSTEM_ID = 0x40
"""Non-transitional devices SHOULD have a PCI Subsystem Device ID of 0x40 or higher (§4.1.2.1)."""


def pci_device_id(device_type: int) -> int:
    """PCI Device ID of a modern (non-transitional) device of ``device_type`` (§4.1.2):
    ``pci_device_id(DeviceType.BLOCK) == 0x1042``."""
    if not 1 <= int(device_type) <= 0x3F:
        raise ValueError(f"virtio device ID {device_type} has no PCI Device ID in 0x1040..0x107F "
                         f"(virtio 1.2 §4.1.2)")
    return PCI_DEVICE_ID_BASE + int(device_type)


# --- PCI transport (§4.1.4) --------------------------------------------------------------------

class PciCapCfgType(enum.Enum, shape=8):
    """``cfg_type`` of a virtio vendor-specific PCI capability (virtio 1.2 §4.1.4)."""
    COMMON_CFG = 1
    NOTIFY_CFG = 2
    ISR_CFG = 3
    DEVICE_CFG = 4
    PCI_CFG = 5
    SHARED_MEMORY_CFG = 8
    VENDOR_CFG = 9


VirtioPciCap = data.StructLayout({      # struct virtio_pci_cap (§4.1.4), 16 bytes
    "cap_vndr": 8,          # 0x09, vendor-specific capability
    "cap_next": 8,
    "cap_len": 8,           # length including any extra data after this structure
    "cfg_type": PciCapCfgType,
    "bar": 8,               # 0..5
    "id": 8,
    "padding": 16,
    "offset": 32,           # offset of the structure within the BAR
    "length": 32,           # length of the structure in bytes
})

VirtioPciNotifyCap = data.StructLayout({    # struct virtio_pci_notify_cap (§4.1.4.4), 20 bytes
    "cap": VirtioPciCap,
    "notify_off_multiplier": 32,
})

VirtioPciCfgCap = data.StructLayout({       # struct virtio_pci_cfg_cap (§4.1.4.9), 20 bytes
    "cap": VirtioPciCap,
    "pci_cfg_data": 32,     # window of cap.length (1, 2 or 4) bytes into cap.bar at cap.offset
})

VirtioPciCommonCfg = data.StructLayout({    # struct virtio_pci_common_cfg (§4.1.4.3)
    "device_feature_select": 32,
    "device_feature": 32,
    "driver_feature_select": 32,
    "driver_feature": 32,
    "config_msix_vector": 16,
    "num_queues": 16,
    "device_status": DeviceStatus,
    "config_generation": 8,
    "queue_select": 16,
    "queue_size": 16,
    "queue_msix_vector": 16,
    "queue_enable": 16,
    "queue_notify_off": 16,
    "queue_desc": 64,
    "queue_driver": 64,
    "queue_device": 64,
    "queue_notify_data": 16,    # virtio 1.2: meaningful only with NOTIF_CONFIG_DATA
    "queue_reset": 16,          # virtio 1.2: meaningful only with RING_RESET
})


class CommonCfg:
    """Byte offsets of the common configuration structure's fields (virtio 1.2 §4.1.4.3).

    64-bit fields are accessed as two 32-bit halves, low half first (§4.1.3); widths are in
    :data:`WIDTH` (bytes).
    """
    DEVICE_FEATURE_SELECT = 0x00
    DEVICE_FEATURE = 0x04
    DRIVER_FEATURE_SELECT = 0x08
    DRIVER_FEATURE = 0x0C
    CONFIG_MSIX_VECTOR = 0x10
    NUM_QUEUES = 0x12
    DEVICE_STATUS = 0x14
    CONFIG_GENERATION = 0x15
    QUEUE_SELECT = 0x16
    QUEUE_SIZE = 0x18
    QUEUE_MSIX_VECTOR = 0x1A
    QUEUE_ENABLE = 0x1C
    QUEUE_NOTIFY_OFF = 0x1E
    QUEUE_DESC = 0x20
    QUEUE_DRIVER = 0x28
    QUEUE_DEVICE = 0x30
    QUEUE_NOTIFY_DATA = 0x38
    QUEUE_RESET = 0x3A
    SIZE = 0x3C

    WIDTH = {
        DEVICE_FEATURE_SELECT: 4, DEVICE_FEATURE: 4, DRIVER_FEATURE_SELECT: 4,
        DRIVER_FEATURE: 4, CONFIG_MSIX_VECTOR: 2, NUM_QUEUES: 2, DEVICE_STATUS: 1,
        CONFIG_GENERATION: 1, QUEUE_SELECT: 2, QUEUE_SIZE: 2, QUEUE_MSIX_VECTOR: 2,
        QUEUE_ENABLE: 2, QUEUE_NOTIFY_OFF: 2, QUEUE_DESC: 8, QUEUE_DRIVER: 8, QUEUE_DEVICE: 8,
        QUEUE_NOTIFY_DATA: 2, QUEUE_RESET: 2,
    }


VIRTIO_MSI_NO_VECTOR = 0xFFFF
"""``config_msix_vector`` / ``queue_msix_vector`` value that disables the interrupt (§4.1.5.1.2)."""

MAX_MSIX_VECTOR = 0x7FF
"""Highest valid MSI-X table entry number a driver may write (§4.1.5.1.2)."""


class IsrStatus(enum.IntFlag, shape=8):
    """ISR status bits (virtio 1.2 §4.1.4.5); reading the ISR byte clears it."""
    QUEUE = 1           # "Queue Interrupt": a used buffer notification
    DEVICE_CONFIG = 2   # "Device Configuration Interrupt"


NotifyData = data.StructLayout({    # 32-bit notification with NOTIFICATION_DATA (§2.9, §4.1.5.2)
    "vqn": 16,          # queue index, or queue_notify_data with NOTIF_CONFIG_DATA
    "next_off": 15,     # split ring: the low 15 bits of the available index
    "next_wrap": 1,     # split ring: bit 15 of the available index
})


def notify_offset(cap_offset: int, queue_notify_off: int, notify_off_multiplier: int) -> int:
    """Queue Notify address within the BAR:
    ``cap.offset + queue_notify_off * notify_off_multiplier`` (virtio 1.2 §4.1.4.4)."""
    return cap_offset + queue_notify_off * notify_off_multiplier


# --- Split virtqueues (§2.7) ----------------------------------------------------------------------

class VirtqDescFlags(enum.IntFlag, shape=16):
    """``flags`` of a descriptor (virtio 1.2 §2.7.5)."""
    NEXT = 1        # VIRTQ_DESC_F_NEXT: the chain continues at ``next``
    WRITE = 2       # VIRTQ_DESC_F_WRITE: device-writable (otherwise device-readable)
    INDIRECT = 4    # VIRTQ_DESC_F_INDIRECT: the buffer holds a table of descriptors


class VirtqAvailFlags(enum.IntFlag, shape=16):
    """``flags`` of the available ring (virtio 1.2 §2.7.6); ignored with EVENT_IDX (§2.7.7.2)."""
    NO_INTERRUPT = 1    # VIRTQ_AVAIL_F_NO_INTERRUPT


class VirtqUsedFlags(enum.IntFlag, shape=16):
    """``flags`` of the used ring (virtio 1.2 §2.7.8); must be 0 with EVENT_IDX (§2.7.10.2)."""
    NO_NOTIFY = 1       # VIRTQ_USED_F_NO_NOTIFY


VirtqDesc = data.StructLayout({     # struct virtq_desc (§2.7.5), 16 bytes
    "addr": 64,
    "len": 32,
    "flags": VirtqDescFlags,
    "next": 16,
})

VirtqUsedElem = data.StructLayout({     # struct virtq_used_elem (§2.7.8), 8 bytes
    "id": 32,       # head of the used descriptor chain
    "len": 32,      # bytes written into the device-writable part of the buffer
})

VirtqAvailHeader = data.StructLayout({  # first 4 bytes of struct virtq_avail (§2.7.6)
    "flags": VirtqAvailFlags,
    "idx": 16,
})

VirtqUsedHeader = data.StructLayout({   # first 4 bytes of struct virtq_used (§2.7.8)
    "flags": VirtqUsedFlags,
    "idx": 16,
})

MAX_QUEUE_SIZE = 32768
"""Largest split-virtqueue size, the highest power of 2 that fits in 16 bits, so that the
16-bit ``idx`` always tells a full ring from an empty one (virtio 1.2 §2.7, §2.7.13)."""

VIRTQ_DESC_BYTES = 16
VIRTQ_AVAIL_ELEM_BYTES = 2
VIRTQ_USED_ELEM_BYTES = 8

# Minimum alignment of each part (§2.7, table "Virtqueue Part / Alignment / Size").
DESC_TABLE_ALIGN = 16
AVAIL_RING_ALIGN = 2
USED_RING_ALIGN = 4

# Byte offsets within the Driver Area (struct virtq_avail) and Device Area (struct virtq_used).
AVAIL_FLAGS_OFFSET = 0
AVAIL_IDX_OFFSET = 2
AVAIL_RING_OFFSET = 4
USED_FLAGS_OFFSET = 0
USED_IDX_OFFSET = 2
USED_RING_OFFSET = 4


def check_queue_size(size: int) -> int:
    """Validate a split-virtqueue size and return it: a power of 2 from 1 to 32768
    ("Queue Size value is always a power of 2. The maximum Queue Size value is 32768",
    virtio 1.2 §2.7)."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"queue size must be an int, not {type(size).__name__}")
    if not 1 <= size <= MAX_QUEUE_SIZE:
        raise ValueError(f"queue size {size} is outside 1..{MAX_QUEUE_SIZE} (virtio 1.2 §2.7)")
    if size & (size - 1):
        raise ValueError(f"queue size {size} is not a power of two (virtio 1.2 §2.7)")
    return size


def desc_table_bytes(queue_size: int) -> int:
    """Size of the Descriptor Table: 16 * Queue Size bytes (virtio 1.2 §2.7)."""
    return VIRTQ_DESC_BYTES * check_queue_size(queue_size)


def avail_ring_bytes(queue_size: int) -> int:
    """Size of the Available Ring: 6 + 2 * Queue Size bytes, used_event included (§2.7)."""
    return 6 + VIRTQ_AVAIL_ELEM_BYTES * check_queue_size(queue_size)


def used_ring_bytes(queue_size: int) -> int:
    """Size of the Used Ring: 6 + 8 * Queue Size bytes, avail_event included (§2.7)."""
    return 6 + VIRTQ_USED_ELEM_BYTES * check_queue_size(queue_size)


def used_event_offset(queue_size: int) -> int:
    """Offset of ``used_event`` in the Driver Area: ``avail->ring[Queue Size]``
    (virtio 1.2 §2.7.6 and ``virtq_used_event()`` in the spec's virtio_queue.h)."""
    return AVAIL_RING_OFFSET + VIRTQ_AVAIL_ELEM_BYTES * check_queue_size(queue_size)


def avail_event_offset(queue_size: int) -> int:
    """Offset of ``avail_event`` in the Device Area: just after ``used->ring[Queue Size - 1]``
    (virtio 1.2 §2.7.8 and ``virtq_avail_event()`` in the spec's virtio_queue.h)."""
    return USED_RING_OFFSET + VIRTQ_USED_ELEM_BYTES * check_queue_size(queue_size)


def vring_need_event(event_idx: int, new_idx: int, old_idx: int) -> bool:
    """True when moving an index from ``old_idx`` to ``new_idx`` passes ``event_idx``.

    This is ``virtq_need_event()`` of the spec's virtio_queue.h in 16-bit arithmetic:
    ``(u16)(new - event - 1) < (u16)(new - old)``, i.e. ``event_idx`` is one of
    ``old_idx, old_idx + 1, ..., new_idx - 1`` modulo 2**16. A device that has just moved
    ``used->idx`` from ``old_idx`` to ``new_idx`` must notify when this is true for
    ``used_event`` (virtio 1.2 §2.7.7.2); a driver likewise with ``avail_event`` (§2.7.10).
    """
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old_idx) & 0xFFFF)


# --- virtio-blk (§5.2) ------------------------------------------------------------------------

class VirtioBlkType(enum.Enum, shape=32):
    """``type`` of a virtio-blk request (virtio 1.2 §5.2.6). This device serves IN, OUT,
    FLUSH and GET_ID; every other value is answered with VIRTIO_BLK_S_UNSUPP."""
    IN = 0
    OUT = 1
    FLUSH = 4
    GET_ID = 8
    GET_LIFETIME = 10
    DISCARD = 11
    WRITE_ZEROES = 13
    SECURE_ERASE = 14


class VirtioBlkStatus(enum.Enum, shape=8):
    """The status byte the device writes at the end of a request (virtio 1.2 §5.2.6)."""
    OK = 0
    IOERR = 1       # device or driver error
    UNSUPP = 2      # request unsupported by the device


VirtioBlkReqHeader = data.StructLayout({    # device-readable head of struct virtio_blk_req (§5.2.6)
    "type": VirtioBlkType,
    "reserved": 32,     # called ioprio by the legacy interface (§5.2.6.3); ignored
    "sector": 64,       # offset in 512-byte sectors; unused (0) for other than IN / OUT
})

VirtioBlkGeometry = data.StructLayout({     # struct virtio_blk_geometry (§5.2.4)
    "cylinders": 16,
    "heads": 8,
    "sectors": 8,
})

VirtioBlkTopology = data.StructLayout({     # struct virtio_blk_topology (§5.2.4)
    "physical_block_exp": 8,    # log2 of logical blocks per physical block
    "alignment_offset": 8,      # offset of the first aligned logical block
    "min_io_size": 16,          # suggested minimum I/O size in blocks
    "opt_io_size": 32,          # optimal (suggested maximum) I/O size in blocks
})

VirtioBlkConfig = data.StructLayout({       # struct virtio_blk_config (§5.2.4), 0x48 bytes
    "capacity": 64,             # in 512-byte sectors, always present
    "size_max": 32,             # SIZE_MAX
    "seg_max": 32,              # SEG_MAX
    "geometry": VirtioBlkGeometry,  # GEOMETRY
    "blk_size": 32,             # BLK_SIZE
    "topology": VirtioBlkTopology,  # TOPOLOGY
    "writeback": 8,             # CONFIG_WCE
    "unused0": 8,               # the device MUST initialize it to 0 (§5.2.5.2)
    "num_queues": 16,           # MQ
    "max_discard_sectors": 32,  # DISCARD
    "max_discard_seg": 32,
    "discard_sector_alignment": 32,
    "max_write_zeroes_sectors": 32,     # WRITE_ZEROES
    "max_write_zeroes_seg": 32,
    "write_zeroes_may_unmap": 8,
    "unused1": 24,              # u8 unused1[3], initialized to 0 (§5.2.5.2)
    "max_secure_erase_sectors": 32,     # SECURE_ERASE
    "max_secure_erase_seg": 32,
    "secure_erase_sector_alignment": 32,
})


class BlkConfig:
    """Byte offsets of the virtio-blk device configuration fields (virtio 1.2 §5.2.4).

    virtio 1.3 appends ``struct virtio_blk_zoned_characteristics`` at 0x48 for the ZONED
    feature, which this device does not offer.
    """
    CAPACITY = 0x00
    SIZE_MAX = 0x08
    SEG_MAX = 0x0C
    GEOMETRY_CYLINDERS = 0x10
    GEOMETRY_HEADS = 0x12
    GEOMETRY_SECTORS = 0x13
    BLK_SIZE = 0x14
    TOPOLOGY_PHYSICAL_BLOCK_EXP = 0x18
    TOPOLOGY_ALIGNMENT_OFFSET = 0x19
    TOPOLOGY_MIN_IO_SIZE = 0x1A
    TOPOLOGY_OPT_IO_SIZE = 0x1C
    WRITEBACK = 0x20
    UNUSED0 = 0x21
    NUM_QUEUES = 0x22
    MAX_DISCARD_SECTORS = 0x24
    MAX_DISCARD_SEG = 0x28
    DISCARD_SECTOR_ALIGNMENT = 0x2C
    MAX_WRITE_ZEROES_SECTORS = 0x30
    MAX_WRITE_ZEROES_SEG = 0x34
    WRITE_ZEROES_MAY_UNMAP = 0x38
    UNUSED1 = 0x39
    MAX_SECURE_ERASE_SECTORS = 0x3C
    MAX_SECURE_ERASE_SEG = 0x40
    SECURE_ERASE_SECTOR_ALIGNMENT = 0x44
    SIZE = 0x48


VIRTIO_BLK_SECTOR_BYTES = 512
"""Unit of ``sector`` and ``capacity``, whatever ``blk_size`` says (virtio 1.2 §5.2.5)."""

VIRTIO_BLK_ID_BYTES = 20
"""Length of the GET_ID data: a NUL-padded ASCII string, not NUL-terminated when it is
20 bytes long (virtio 1.2 §5.2.6)."""

VIRTIO_BLK_REQ_HEADER_BYTES = 16
"""Bytes of :data:`VirtioBlkReqHeader` (type, reserved, sector)."""

VIRTIO_BLK_STATUS_BYTES = 1
"""The status byte that ends every request (§5.2.6)."""


# --- Layout helpers ----------------------------------------------------------------------------

def field_bytes(layout: data.Layout, path: str) -> tuple[int, int]:
    """``(byte offset, byte width)`` of a field of a byte-aligned layout, by dotted path:
    ``field_bytes(VirtioBlkConfig, "geometry.heads") == (0x12, 1)``."""
    layout = data.Layout.cast(layout)
    offset = 0
    field = None
    for name in path.split("."):
        if field is not None:
            layout = data.Layout.cast(field.shape)
        field = layout[name]
        offset += field.offset
    if offset % 8 or field.width % 8:
        raise ValueError(f"field {path!r} is not byte-aligned (bit offset {offset}, "
                         f"width {field.width})")
    return offset // 8, field.width // 8
