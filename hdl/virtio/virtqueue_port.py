"""The split-virtqueue engine's port contracts: configuration, backend elements, errors, stats.

:class:`~hdl.virtio.virtqueue_engine.VirtqueueEngine` talks to three neighbours; the
layouts they exchange live here so that the transport, the backends (the test backend,
virtio-blk) and the testbenches import one definition.

* The **transport** hands the engine one :data:`VirtqConfig` per queue (the common
  configuration registers of virtio 1.2 §4.1.4.3), the negotiated :data:`VirtqFeatures`,
  DRIVER_OK and doorbells, and takes back used-buffer notifications and
  DEVICE_NEEDS_RESET with a :data:`VirtqError`.
* A **backend** receives every available buffer as a burst of :class:`VirtqElemDesc` beats,
  one per descriptor (indirect tables already expanded), and answers each buffer with one
  :class:`VirtqElemDone`, in any order.
* **Statistics** (:data:`VirtqStats`) count what the engine did, for benchmarks.
"""
from amaranth.hdl import unsigned
from amaranth.lib import data, enum

__all__ = ["MAX_QUEUES", "QUEUE_BITS", "VirtqConfig", "VirtqFeatures", "VirtqElemDesc",
           "VirtqElemDone", "VirtqErrorKind", "VirtqError", "VirtqStats", "STAT_FIELDS"]

MAX_QUEUES = 16
"""Most queues one engine serves."""

QUEUE_BITS = 4
"""Width of every queue-index field on the engine's ports (holds 0..MAX_QUEUES - 1)."""


VirtqConfig = data.StructLayout({
    "size": unsigned(16),       # queue_size: a power of two 1..max_queue_size (§2.7)
    "enable": unsigned(1),      # queue_enable
    "desc": unsigned(64),       # queue_desc: Descriptor Area (16-byte aligned)
    "driver": unsigned(64),     # queue_driver: Driver Area, the available ring (2-byte aligned)
    "device": unsigned(64),     # queue_device: Device Area, the used ring (4-byte aligned)
})
"""One queue's configuration, as the driver wrote it to the common configuration structure
(virtio 1.2 §4.1.4.3). A queue is served only while ``enable`` is set and ``size`` is a
power of two no larger than the engine's ``max_queue_size``; the transport keeps the fields
stable while ``enable`` is set (the spec makes them read-only then)."""

VirtqFeatures = data.StructLayout({
    "in_order": unsigned(1),        # VIRTIO_F_IN_ORDER (35), §2.7.9
    "event_idx": unsigned(1),       # VIRTIO_F_EVENT_IDX (29), §2.7.7, §2.7.10
    "indirect_desc": unsigned(1),   # VIRTIO_F_INDIRECT_DESC (28), §2.7.5.3
})
"""The negotiated features the engine acts on. The transport changes them only while the
engine is reset (before DRIVER_OK)."""


class VirtqElemDesc(data.StructLayout):
    """One descriptor of an element handed to a backend: a beat of the ``elem`` stream.

    An element (one available buffer) is a burst of beats, one per descriptor in chain
    order, device-readable ones first (§2.7.4.2), ``last`` on its final beat. ``queue``,
    ``seq`` and ``head`` are the same on every beat of an element: ``seq`` is the element's
    sequence number in its queue's reorder buffer (``seq_width`` bits, counting modulo
    ``2 * reorder_depth``) and ``head`` the descriptor index the used ring returns as ``id``.
    A descriptor that points to an indirect table never appears; the table's entries do.
    Zero-length descriptors appear like any other.
    """

    def __init__(self, seq_width: int):
        super().__init__({
            "queue": unsigned(QUEUE_BITS),
            "seq": unsigned(seq_width),
            "head": unsigned(16),
            "addr": unsigned(64),
            "len": unsigned(32),
            "write": unsigned(1),   # device-writable (VIRTQ_DESC_F_WRITE)
            "last": unsigned(1),
        })


class VirtqElemDone(data.StructLayout):
    """A backend's answer to one element: ``queue``, ``seq`` and ``head`` echoed from its
    beats, and ``written_len``, the bytes written from the start of its device-writable part
    (the used element's ``len``, §2.7.8.2)."""

    def __init__(self, seq_width: int):
        super().__init__({
            "queue": unsigned(QUEUE_BITS),
            "seq": unsigned(seq_width),
            "head": unsigned(16),
            "written_len": unsigned(32),
        })


class VirtqErrorKind(enum.Enum, shape=4):
    """Why the engine stopped a queue and asked for DEVICE_NEEDS_RESET.

    Values 1..9 are the driver errors of ``docs/robustness.md`` (and
    :class:`sim.model.virtqueue.ErrorKind`, same names); the rest are the engine's own.
    """
    NONE = 0
    AVAIL_IDX_JUMP = 1
    HEAD_OUT_OF_RANGE = 2
    NEXT_OUT_OF_RANGE = 3
    CHAIN_TOO_LONG = 4
    INDIRECT_NOT_NEGOTIATED = 5
    INDIRECT_WITH_NEXT = 6
    NESTED_INDIRECT = 7
    BAD_INDIRECT_LEN = 8
    READABLE_AFTER_WRITABLE = 9
    DMA_READ_ERROR = 10     # a control-path read (ring, descriptor, table) failed
    DMA_WRITE_ERROR = 11    # a used-ring or avail_event write failed
    BAD_COMPLETION = 12     # the backend completed a seq that is not in flight (a backend bug)


VirtqError = data.StructLayout({
    "queue": unsigned(QUEUE_BITS),
    "kind": VirtqErrorKind,
})
"""Which queue stopped and why (for logs; every kind has the same outcome)."""

STAT_FIELDS = (
    "rd_avail_idx",     # reads of avail->idx
    "rd_avail_ring",    # reads of available ring entries
    "rd_desc_block",    # descriptor reads on the prefetch channel (blocks or single heads)
    "rd_desc_chain",    # single-descriptor reads following a chain off its block
    "rd_indirect",      # indirect table reads
    "rd_notify",        # reads of used_event / avail->flags deciding a notification
    "wr_used_elem",     # used ring element writes (one command may carry several elements)
    "wr_used_idx",      # used->idx writes
    "wr_avail_event",   # avail_event writes
    "notifications",    # used-buffer notifications raised
    "elements",         # elements handed to the backend
    "used_elems",       # used ring elements written
    "buffers_used",     # buffers returned to the driver (sum of used->idx advances)
)

VirtqStats = data.StructLayout({name: unsigned(32) for name in STAT_FIELDS})
"""Free-running 32-bit counters of what the engine did (cleared only by ``rst``). Every DMA
command counted here becomes at least one TLP."""
