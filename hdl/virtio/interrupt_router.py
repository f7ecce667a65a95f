"""Routes used-buffer and configuration change notifications to MSI-X or ISR + INTx."""
from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from hdl.virtio.spec import VIRTIO_MSI_NO_VECTOR

__all__ = ["InterruptRouter"]


class InterruptRouter(wiring.Component):
    """Sends the device's notifications to the driver (virtio 1.2 §4.1.5.3, §4.1.5.4).

    * A used buffer notification for queue ``q`` (``notify``): with MSI-X enabled, a
      message on the queue's ``queue_msix_vector``, or nothing when that is NO_VECTOR
      (§4.1.5.1.2); with MSI-X disabled, ISR bit 0 (the ISR then drives INTx, §4.1.4.5.1).
    * A configuration change notification (``config_event``): ISR bit 1 always (the device
      MUST set it before sending the notification, §4.1.4.5.1), and with MSI-X enabled a
      message on ``config_msix_vector`` unless it is NO_VECTOR.

    A configuration change waiting for its message goes before the next queue
    notification; ``notify`` waits while a message cannot be handed over (the function
    accepts one per clock). Vector numbers are below ``msix_vectors`` or NO_VECTOR (the
    common configuration never stores another value).

    Reset: ``rst`` or ``clear`` (the device reset) forgets a configuration message not yet
    sent; a queue message already offered on ``msix`` is kept until taken.

    Parameters
    ----------
    num_queues : int
    msix_vectors : int
        MSI-X Table Size; 0 builds no ``msix`` port and routes everything to the ISR.

    Attributes
    ----------
    notify : In(stream.Signature(4))
        Queue index of a used buffer notification (the virtqueue engine's ``notify``).
    config_event : In(1)
        A configuration change notification (pulse).
    clear : In(1)
    msix_enable : In(1)
        MSI-X Enable of the function's MSI-X capability.
    queue_vector : In(ArrayLayout(16, num_queues))
    config_vector : In(16)
    msix : Out(stream.Signature(vector_width))
        MSI-X vector requests for the function (only when ``msix_vectors`` > 0).
    isr_set : Out(2)
        Bits to set in the ISR (bit 0 queue, bit 1 configuration), pulses.
    """

    def __init__(self, *, num_queues: int, msix_vectors: int):
        if not isinstance(num_queues, int) or not 1 <= num_queues <= 16:
            raise ValueError(f"num_queues must be 1 to 16 (a 4-bit queue index), not "
                             f"{num_queues!r}")
        if not isinstance(msix_vectors, int) or msix_vectors < 0:
            raise ValueError(f"msix_vectors must be a non-negative integer, not "
                             f"{msix_vectors!r}")
        self.num_queues = num_queues
        self.msix_vectors = msix_vectors
        self.vector_width = max(1, ceil_log2(msix_vectors)) if msix_vectors else 0
        members = {
            "notify": In(stream.Signature(unsigned(4))),
            "config_event": In(1),
            "clear": In(1),
            "msix_enable": In(1),
            "queue_vector": In(data.ArrayLayout(unsigned(16), num_queues)),
            "config_vector": In(16),
            "isr_set": Out(2),
        }
        if msix_vectors:
            members["msix"] = Out(stream.Signature(unsigned(self.vector_width)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        notify = self.notify
        q_index = notify.payload[:max(1, (self.num_queues - 1).bit_length())]
        with m.If(self.config_event):
            m.d.comb += self.isr_set[1].eq(1)

        if not self.msix_vectors:
            m.d.comb += notify.ready.eq(1)
            with m.If(notify.valid):
                m.d.comb += self.isr_set[0].eq(1)
            return m

        msix = self.msix
        config_pending = Signal()
        with m.If(self.config_event & self.msix_enable
                  & (self.config_vector != VIRTIO_MSI_NO_VECTOR)):
            m.d.sync += config_pending.eq(1)

        free = ~msix.valid | msix.ready
        with m.If(msix.valid & msix.ready):
            m.d.sync += msix.valid.eq(0)
        vector = Array(self.queue_vector[q] for q in range(self.num_queues))[q_index]
        with m.If(config_pending):
            with m.If(free):
                m.d.sync += [msix.valid.eq(1), msix.payload.eq(self.config_vector),
                             config_pending.eq(0)]
        with m.Elif(notify.valid):
            with m.If(~self.msix_enable):
                m.d.comb += [notify.ready.eq(1), self.isr_set[0].eq(1)]
            with m.Elif(vector == VIRTIO_MSI_NO_VECTOR):
                m.d.comb += notify.ready.eq(1)
            with m.Elif(free):
                m.d.comb += notify.ready.eq(1)
                m.d.sync += [msix.valid.eq(1), msix.payload.eq(vector)]
        with m.If(self.clear):
            m.d.sync += config_pending.eq(0)
        return m
