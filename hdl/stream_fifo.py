"""A stream passed through a synchronous FIFO, for when a queue sits between two components."""
from amaranth.hdl import Module, Shape
from amaranth.lib import fifo

__all__ = ["FULL_RATE_DEPTH", "queue_stream"]

#: The smallest depth at which a queue passes one beat per clock: ``SyncFIFOBuffered``
#: refills its output register from an inner memory read a clock after it is written.
FULL_RATE_DEPTH = 3


def queue_stream(m: Module, source, sink, depth: int) -> fifo.SyncFIFOBuffered:
    """Connect stream ``source`` to stream ``sink`` in ``m`` through a new
    ``fifo.SyncFIFOBuffered`` of ``depth`` entries and return the FIFO, which the caller adds
    as a submodule (wrapped in a ``ResetInserter`` if it needs one).

    Both ends see registered handshakes: the sink's ``valid`` is the FIFO's output register,
    the source's ``ready`` its fill level, so no combinational path runs from one side to
    the other. The payloads must have the same shape. Reset empties the FIFO (whatever was
    queued is dropped), so it belongs to the reset domain of both ends.
    """
    width = Shape.cast(source.payload.shape()).width
    queue = fifo.SyncFIFOBuffered(width=width, depth=depth)
    m.d.comb += [
        queue.w_data.eq(source.payload),
        queue.w_en.eq(source.valid),
        source.ready.eq(queue.w_rdy),
        sink.payload.eq(queue.r_data),
        sink.valid.eq(queue.r_rdy),
        queue.r_en.eq(sink.ready),
    ]
    return queue
