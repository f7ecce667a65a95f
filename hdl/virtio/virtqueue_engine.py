"""The split-virtqueue engine: available rings in, elements to a backend, used rings out."""
from amaranth.hdl import Cat, Module, ResetInserter, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from hdl.pcie.dma_port import MAX_DMA_LEN, ReadChannelSignature, WriteChannelSignature
from hdl.stream_fifo import FULL_RATE_DEPTH, queue_stream
from hdl.virtio.avail_fetcher import AvailFetcher, check_low_water
from hdl.virtio.chain_walker import ChainWalker
from hdl.virtio.dma_read_arbiter import DmaReadArbiter
from hdl.virtio.dma_write_arbiter import DmaWriteArbiter
from hdl.virtio.element_dispatcher import ElementDispatcher, used_payload_layout
from hdl.virtio.reorder_buffer import MAX_DEPTH, MIN_DEPTH, ReorderBuffer
from hdl.virtio.spec import MAX_QUEUE_SIZE, VIRTQ_DESC_BYTES
from hdl.virtio.used_notifier import UsedNotifier
from hdl.virtio.used_writer import UsedWriter
from hdl.virtio.virtqueue_port import MAX_QUEUES, QUEUE_BITS, STAT_FIELDS, VirtqConfig, \
    VirtqElemDesc, VirtqElemDone, VirtqError, VirtqErrorKind, VirtqFeatures, VirtqStats

__all__ = ["VirtqueueEngine"]


class _Reset(enum.Enum, shape=2):
    RUN = 0
    DRAIN = 1       # no new DMA commands; outstanding ones finish or are drained
    CLEAR = 2       # everything is reset, the reorder buffers flush
    HELD = 3        # cleared; idle once the reorder buffers are done


def _power_of_two(name: str, value, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high or value & (value - 1):
        raise ValueError(f"{name} must be a power of two from {low} to {high}, not {value}")
    return value


class VirtqueueEngine(wiring.Component):
    """Serves ``num_queues`` split virtqueues (virtio 1.2 §2.7) for one backend.

    The engine fetches what the driver made available, hands each buffer (an *element*) to
    the backend as a burst of descriptors, and writes the used ring when the backend is done,
    then decides on a used-buffer notification. Negotiated VIRTIO_F_IN_ORDER (§2.7.9)
    changes two things: descriptors are fetched in contiguous blocks with one DMA read, and
    completions, which the backend may return in any order, leave through a per-queue
    :class:`~hdl.virtio.reorder_buffer.ReorderBuffer` in the order the buffers were made
    available, a run of them as ONE used element (the id of the run's last buffer, its
    written length) plus one ``used->idx`` write. Without IN_ORDER the same reorder buffers
    run in bypass mode and every completion becomes its own used element, in completion
    order. See ``docs/virtqueue-engine.md`` for the design and the figures.

    Parameters
    ----------
    num_queues : int
        Queues served, 1 to 16. Default 4.
    max_queue_size : int
        Largest Queue Size accepted, a power of two up to 32768 (§2.7). Default 32768.
    reorder_depth : int
        Elements in flight per queue (fetched, not yet returned through the used ring): the
        depth of each queue's reorder buffer, a power of two from 2 to 4096. Default 256,
        the usual virtio-blk queue depth; it must also cover the fetch-to-retire round trip
        for line rate (see docs/virtqueue-engine.md).
    data_width : int
        Width of the DMA data paths: 64 (default) or 128.
    max_batch : int
        Most available ring entries read with one command (power of two, 1 to 256).
        Default 32.
    max_block : int
        Most descriptors read with one command under IN_ORDER (power of two, 1 to 1024).
        Default 64.
    max_chain_len : int
        The device's limit on descriptors per element (§2.7.4.1 "a reasonable limit"),
        indirect tables included, 1 to 4096. Longer chains are a CHAIN_TOO_LONG error.
        Default 128.
    max_used_batch : int
        Most used elements written with one command without IN_ORDER (power of two).
        Default 32.
    fetch_low_water : int or None
        A queue with more elements than this in flight does not read its available ring
        until enough retire, so a saturated queue fetches in batches instead of one buffer
        per doorbell (:class:`~hdl.virtio.avail_fetcher.AvailFetcher`). 1 to
        ``reorder_depth``; ``None`` (default) fetches whenever there is reorder credit.

    Attributes
    ----------
    queue_config : In(data.ArrayLayout(VirtqConfig, num_queues))
        Per queue: size, enable, and the three area addresses, as the driver programmed
        them. A queue is served while enabled with a power-of-two size up to
        ``max_queue_size``; the fields must not change while it is enabled.
    features : In(VirtqFeatures)
        ``in_order``, ``event_idx``, ``indirect_desc`` as negotiated; changed only while
        ``reset`` is held (or before the first doorbell after ``rst``).
    driver_ok : In(1)
        DRIVER_OK is set: doorbells are looked at only then.
    doorbell : In(stream.Signature(16))
        Available buffer notification: the queue index written to the notify region
        (§4.1.5.2). Always ready; an index that is not a served, enabled queue is ignored.
    reset : In(1)
        Device reset request (device_status written to 0, §4.1.4.3.1). Hold it until
        ``idle``. The engine creates no new DMA commands, lets every command already
        offered finish (reads: their data is taken and dropped; writes: their data is sent
        and their ``done`` awaited), finishes the element it is handing out, then clears
        every queue's state, the errors and the reorder buffers.
    idle : Out(1)
        The reset is complete: no DMA command outstanding, all state cleared. Falls when
        ``reset`` is released; the engine then serves the queues from index 0 again.
    needs_reset : Out(1)
        Sticky: a queue stopped on bad driver input (``docs/robustness.md``), a failed DMA
        command on the control path, or a bad completion. The transport sets
        DEVICE_NEEDS_RESET and sends a configuration change notification. Cleared by a
        reset.
    error : Out(VirtqError)
        The queue and kind of the first error (for logs), valid while ``needs_reset``.
    notify : Out(stream.Signature(4))
        A used-buffer notification for that queue: the transport sends its MSI-X vector, or
        sets ISR bit 0 and INTx. Issued only after the ``used->idx`` write it is for was
        ``done``.
    elem : Out(stream.Signature(VirtqElemDesc(seq_width)))
        Elements for the backend, one beat per descriptor, ``last`` on the final one; every
        chain has been checked and every DMA read behind it completed without error.
    done : In(stream.Signature(VirtqElemDone(seq_width)))
        The backend's completions, one per element, in any order; always ready.
        ``written_len`` below the element's device-writable total ends an IN_ORDER run.
    ring_rd : Out(ReadChannelSignature(data_width))
        Control reads: ``avail->idx``, available ring entries, single descriptors off a
        block, indirect tables, ``used_event`` / ``avail->flags``.
    desc_rd : Out(ReadChannelSignature(data_width))
        Descriptor prefetch: one read per group of heads (IN_ORDER: a block of up to
        ``max_block`` descriptors; otherwise the 16-byte head descriptor).
    ctl_wr : Out(WriteChannelSignature(data_width))
        Control writes: used ring elements, ``used->idx``, ``avail_event``.
    stats : Out(VirtqStats)
        Free-running counters (cleared by ``rst`` only).
    seq_width : int
        Width of the seq fields, ``log2(reorder_depth) + 1``.
    """

    def __init__(self, *, num_queues: int = 4, max_queue_size: int = MAX_QUEUE_SIZE,
                 reorder_depth: int = 256, data_width: int = 64, max_batch: int = 32,
                 max_block: int = 64, max_chain_len: int = 128, max_used_batch: int = 32,
                 fetch_low_water: int | None = None):
        if not isinstance(num_queues, int) or not 1 <= num_queues <= MAX_QUEUES:
            raise ValueError(f"num_queues must be from 1 to {MAX_QUEUES}, not {num_queues!r}")
        _power_of_two("max_queue_size", max_queue_size, 1, MAX_QUEUE_SIZE)
        _power_of_two("reorder_depth", reorder_depth, MIN_DEPTH, MAX_DEPTH)
        if data_width not in (64, 128):
            raise ValueError(f"data_width must be 64 or 128, not {data_width!r}")
        _power_of_two("max_batch", max_batch, 1, 256)
        _power_of_two("max_block", max_block, 1, 1024)
        _power_of_two("max_used_batch", max_used_batch, 1, 1024)
        if (not isinstance(max_chain_len, int)
                or not 1 <= max_chain_len <= MAX_DMA_LEN // VIRTQ_DESC_BYTES):
            raise ValueError(f"max_chain_len must be from 1 to "
                             f"{MAX_DMA_LEN // VIRTQ_DESC_BYTES} (an indirect table is read "
                             f"with one DMA command), not {max_chain_len!r}")
        if fetch_low_water is not None:
            check_low_water(fetch_low_water, reorder_depth)
        self.fetch_low_water = fetch_low_water
        self.num_queues = num_queues
        self.max_queue_size = max_queue_size
        self.reorder_depth = reorder_depth
        self.data_width = data_width
        self.max_batch = max_batch
        self.max_block = max_block
        self.max_chain_len = max_chain_len
        self.max_used_batch = max_used_batch
        self.seq_width = exact_log2(reorder_depth) + 1
        super().__init__({
            "queue_config": In(data.ArrayLayout(VirtqConfig, num_queues)),
            "features": In(VirtqFeatures),
            "driver_ok": In(1),
            "doorbell": In(stream.Signature(unsigned(16))),
            "reset": In(1),
            "idle": Out(1),
            "needs_reset": Out(1),
            "error": Out(VirtqError),
            "notify": Out(stream.Signature(unsigned(QUEUE_BITS))),
            "elem": Out(stream.Signature(VirtqElemDesc(self.seq_width))),
            "done": In(stream.Signature(VirtqElemDone(self.seq_width))),
            "ring_rd": Out(ReadChannelSignature(data_width)),
            "desc_rd": Out(ReadChannelSignature(data_width)),
            "ctl_wr": Out(WriteChannelSignature(data_width)),
            "stats": Out(VirtqStats),
        })

    def elaborate(self, platform):
        m = Module()
        nq = self.num_queues
        width = self.data_width

        clear = Signal()                # hold every block but the reorder buffers in reset
        flush = Signal()
        quiesce = Signal()

        def cleared(name, block):
            m.submodules[name] = ResetInserter(clear)(block)
            return block

        fetcher = cleared("fetcher", AvailFetcher(
            num_queues=nq, max_queue_size=self.max_queue_size,
            reorder_depth=self.reorder_depth, width=width, max_batch=self.max_batch,
            max_block=self.max_block, low_water=self.fetch_low_water))
        walker = cleared("walker", ChainWalker(
            num_queues=nq, max_queue_size=self.max_queue_size, width=width,
            max_batch=self.max_batch, max_block=self.max_block,
            max_chain_len=self.max_chain_len))
        dispatcher = cleared("dispatcher", ElementDispatcher(
            num_queues=nq, reorder_depth=self.reorder_depth,
            buffer_depth=max(16, 1 << ceil_log2(self.max_chain_len))))
        rbs = []
        for q in range(nq):
            rb = ReorderBuffer(depth=self.reorder_depth, payload_layout=used_payload_layout)
            m.submodules[f"rob{q}"] = rb
            rbs.append(rb)
        writer = cleared("used_writer", UsedWriter(
            num_queues=nq, reorder_depth=self.reorder_depth, width=width,
            retire_layout=rbs[0].retire_layout, max_used_batch=self.max_used_batch))
        notifier = cleared("notifier", UsedNotifier(num_queues=nq, width=width))
        ring_arb = cleared("ring_arb", DmaReadArbiter(num_clients=3, width=width,
                                                      max_outstanding=8))
        desc_arb = cleared("desc_arb", DmaReadArbiter(num_clients=1, width=width,
                                                      max_outstanding=32))
        wr_arb = cleared("wr_arb", DmaWriteArbiter(num_clients=2, width=width,
                                                   max_outstanding=16))

        # --- configuration to every block ---------------------------------------------------
        for block in (fetcher, walker, writer, notifier):
            m.d.comb += [block.config.eq(self.queue_config), block.features.eq(self.features),
                         block.quiesce.eq(quiesce)]
        m.d.comb += [
            fetcher.driver_ok.eq(self.driver_ok),
            dispatcher.quiesce.eq(quiesce),
            ring_arb.drain.eq(quiesce),
            desc_arb.drain.eq(quiesce),
        ]

        # --- data path ----------------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.doorbell), fetcher.doorbell)
        wiring.connect(m, fetcher.ring_rd, ring_arb.clients[0])
        wiring.connect(m, walker.ring_rd, ring_arb.clients[1])
        wiring.connect(m, notifier.ring_rd, ring_arb.clients[2])
        wiring.connect(m, wiring.flipped(self.ring_rd), ring_arb.bus)
        wiring.connect(m, fetcher.desc_cmd, desc_arb.clients[0].cmd)
        wiring.connect(m, walker.desc_data, desc_arb.clients[0].data)
        wiring.connect(m, wiring.flipped(self.desc_rd), desc_arb.bus)
        wiring.connect(m, writer.wr, wr_arb.clients[0])
        wiring.connect(m, fetcher.ae_wr, wr_arb.clients[1])
        wiring.connect(m, wiring.flipped(self.ctl_wr), wr_arb.bus)
        # Heads and blocks reach the walker through short queues: the fetcher's FIFOs are
        # block RAMs, and the walker starts a group (buffer address from the block's base)
        # in the cycle it sees them.
        cleared("heads_q", queue_stream(m, fetcher.heads, walker.heads, depth=FULL_RATE_DEPTH))
        cleared("blocks_q", queue_stream(m, fetcher.blocks, walker.blocks, depth=FULL_RATE_DEPTH))
        m.d.comb += fetcher.block_free.eq(walker.block_free)
        wiring.connect(m, walker.out, dispatcher.walk)
        wiring.connect(m, wiring.flipped(self.elem), dispatcher.elem)
        wiring.connect(m, wiring.flipped(self.done), dispatcher.done)
        for q, rb in enumerate(rbs):
            wiring.connect(m, rb.alloc, dispatcher.alloc[q])
            wiring.connect(m, dispatcher.complete[q], rb.complete)
            wiring.connect(m, rb.retire, writer.retire[q])
            m.d.comb += [rb.bypass.eq(~self.features.in_order), rb.flush.eq(flush)]
        wiring.connect(m, writer.credit, fetcher.credit)
        wiring.connect(m, writer.idx_done, notifier.idx_done)
        wiring.connect(m, wiring.flipped(self.notify), notifier.notify)

        # --- errors: stop the queue, DEVICE_NEEDS_RESET -------------------------------------
        stopped = Signal(nq)
        rb_seen = Signal(nq)            # reorder buffer errors already reported
        rb_new = Signal(nq)
        m.d.comb += rb_new.eq(Cat(rb.error for rb in rbs) & ~rb_seen)
        stop = Signal(nq)
        m.d.comb += stop.eq(fetcher.stop | walker.stop | writer.stop | notifier.stop | rb_new)
        for block in (fetcher, walker):
            m.d.comb += block.stopped.eq(stopped)
        m.d.sync += [stopped.eq(stopped | stop), rb_seen.eq(rb_seen | rb_new)]

        sources = [fetcher.error, walker.error, dispatcher.error, writer.error, notifier.error]
        first = Signal(VirtqError)
        any_error = Signal()
        for source in reversed(sources):
            with m.If(source.valid):
                m.d.comb += [any_error.eq(1), first.eq(source.payload)]
        rb_any = rb_new.any()
        rb_queue = Signal(QUEUE_BITS)
        for q in reversed(range(nq)):
            with m.If(rb_new[q]):
                m.d.comb += rb_queue.eq(q)
        with m.If(~self.needs_reset):
            with m.If(any_error):
                m.d.sync += [self.needs_reset.eq(1), self.error.eq(first)]
            with m.Elif(rb_any):
                m.d.sync += [self.needs_reset.eq(1), self.error.queue.eq(rb_queue),
                             self.error.kind.eq(VirtqErrorKind.BAD_COMPLETION)]

        # --- device reset -------------------------------------------------------------------
        state = Signal(_Reset)
        quiet = (fetcher.quiet & walker.quiet & dispatcher.quiet & writer.quiet
                 & notifier.quiet & ring_arb.idle & desc_arb.idle & wr_arb.idle)
        rb_busy = Cat(rb.busy for rb in rbs).any()
        m.d.comb += [
            quiesce.eq(state != _Reset.RUN),
            clear.eq((state == _Reset.CLEAR) | (state == _Reset.HELD)),
            flush.eq(state == _Reset.CLEAR),
            self.idle.eq((state == _Reset.HELD) & ~rb_busy),
        ]
        with m.Switch(state):
            with m.Case(_Reset.RUN):
                with m.If(self.reset):
                    m.d.sync += state.eq(_Reset.DRAIN)
            with m.Case(_Reset.DRAIN):
                with m.If(quiet):
                    m.d.sync += state.eq(_Reset.CLEAR)
            with m.Case(_Reset.CLEAR):
                m.d.sync += [
                    state.eq(_Reset.HELD),
                    stopped.eq(0),
                    rb_seen.eq(0),
                    self.needs_reset.eq(0),
                    self.error.eq(0),
                ]
            with m.Case(_Reset.HELD):
                with m.If(~self.reset & ~rb_busy):
                    m.d.sync += state.eq(_Reset.RUN)

        # --- statistics ---------------------------------------------------------------------
        events = {
            "rd_avail_idx": fetcher.events.rd_avail_idx,
            "rd_avail_ring": fetcher.events.rd_avail_ring,
            "rd_desc_block": self.desc_rd.cmd.valid & self.desc_rd.cmd.ready,
            "rd_desc_chain": walker.events.rd_desc_chain,
            "rd_indirect": walker.events.rd_indirect,
            "rd_notify": notifier.events.rd_notify,
            "wr_used_elem": writer.events.wr_used_elem,
            "wr_used_idx": writer.events.wr_used_idx,
            "wr_avail_event": fetcher.events.wr_avail_event,
            "notifications": notifier.events.notifications,
            "elements": dispatcher.events.elements,
            "used_elems": writer.events.used_elems,
            "buffers_used": writer.events.buffers_used,
        }
        assert set(events) == set(STAT_FIELDS)
        for name, pulse in events.items():
            counter = getattr(self.stats, name)
            m.d.sync += counter.eq(counter + pulse)
        return m
