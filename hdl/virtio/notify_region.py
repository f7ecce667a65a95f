"""The notification region: one doorbell per queue (virtio 1.2 §4.1.4.4, §4.1.5.2)."""
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from hdl.pcie.register_bus import RegisterBus

__all__ = ["NotifyRegion"]


class NotifyRegion(wiring.Component):
    """Turns writes to the notification window into available buffer notifications.

    Queue ``q``'s doorbell is at byte ``q * notify_off_multiplier`` of the window
    (``queue_notify_off`` = ``q``, §4.1.4.4). A write touching that DW (any bytes, any
    value: without VIRTIO_F_NOTIFICATION_DATA the driver writes the queue index, §4.1.5.2,
    and the address already says which queue) puts ``q`` on ``doorbell``. A write is
    *ignored*, and counted, when the queue does not exist, is not enabled, DRIVER_OK is not
    set, or the write hits a DW between two doorbells (``notify_off_multiplier`` > 4);
    ``docs/robustness.md``. Reads return 0 and have no effect.

    Reset: only the counter (``rst``); the region holds no other state.

    Parameters
    ----------
    num_queues : int
        Queues of the device.
    notify_off_multiplier : int
        Bytes between two doorbells, a power of two of at least 4.
    addr_width : int
        Width of the window's DW address; the window must hold every doorbell.

    Attributes
    ----------
    bus : In(RegisterBus.Signature(addr_width))
    doorbell : Out(stream.Signature(16))
        The queue index of each accepted notification; a write waits while it is not taken.
    queue_enabled : In(num_queues)
        ``queue_enable`` of each queue.
    driver_ok : In(1)
    ignored : Out(16)
        Ignored notifications (wrapping).
    """

    def __init__(self, *, num_queues: int, notify_off_multiplier: int = 4,
                 addr_width: int = 10):
        if not isinstance(num_queues, int) or num_queues < 1:
            raise ValueError(f"num_queues must be a positive integer, not {num_queues!r}")
        if (not isinstance(notify_off_multiplier, int) or notify_off_multiplier < 4
                or notify_off_multiplier & (notify_off_multiplier - 1)):
            raise ValueError(f"notify_off_multiplier must be a power of two of at least 4, "
                             f"not {notify_off_multiplier!r}")
        if num_queues * notify_off_multiplier > 4 << addr_width:
            raise ValueError(f"{num_queues} doorbells {notify_off_multiplier} bytes apart do "
                             f"not fit a {4 << addr_width}-byte window")
        self.num_queues = num_queues
        self.notify_off_multiplier = notify_off_multiplier
        super().__init__({
            "bus": In(RegisterBus.Signature(addr_width=addr_width)),
            "doorbell": Out(stream.Signature(unsigned(16))),
            "queue_enabled": In(num_queues),
            "driver_ok": In(1),
            "ignored": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        shift = exact_log2(self.notify_off_multiplier // 4)
        queue = Signal(len(bus.addr))
        m.d.comb += queue.eq(bus.addr >> shift)
        on_doorbell = (bus.addr & ((1 << shift) - 1)) == 0
        enabled = Signal()
        m.d.comb += enabled.eq((queue < self.num_queues) & self.queue_enabled.bit_select(
            queue[:max(1, (self.num_queues - 1).bit_length())], 1))
        ring = Signal()
        m.d.comb += ring.eq(bus.write & on_doorbell & enabled & self.driver_ok)
        m.d.comb += [
            self.doorbell.payload.eq(queue),
            self.doorbell.valid.eq(bus.valid & ring),
            bus.ack.eq(bus.valid & (~ring | self.doorbell.ready)),
            bus.r_data.eq(0),
        ]
        with m.If(bus.valid & bus.ack & bus.write & ~ring):
            m.d.sync += self.ignored.eq(self.ignored + 1)
        return m
