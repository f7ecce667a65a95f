"""One virtqueue of the reference device: the golden split-ring model driven over DMA.

:class:`DeviceVirtqueue` owns a :class:`~sim.model.virtqueue.SplitVirtqueueDevice` working on
a :class:`~sim.refdev.shadow.ShadowMemory` and moves bytes between the shadow and host memory
by DMA through the PCIe function:

* **Doorbell** (§4.1.5.2): one service pass per notification (notifications that arrive
  during a pass cause another). Without EVENT_IDX the queue sets VIRTQ_USED_F_NO_NOTIFY for
  the pass, as QEMU does, then clears it and fetches once more, so buffers the driver made
  available meanwhile are not missed (§2.7.10).
* **Fetch**: read ``avail->idx``, the new ring entries (one read, two when they wrap) and
  every chain's descriptors: a read of the missing descriptor and the next few in the table,
  or the rest of an indirect table (§2.7.5.3); then the model consumes the entries
  (``fetch``), checking every rule of `docs/robustness.md`, and with EVENT_IDX its
  ``avail_event`` write is carried out (§2.7.10).
* **Backend**: each element goes to the device type's backend, which completes it after its
  own latency, so completions come back in any order.
* **Used ring**: completions go to the model (``complete``), which decides the used ring
  contents (``flush``): one element per buffer in completion order, or with IN_ORDER one
  element per run of consecutive buffers (§2.7.9). The writes are carried out in order:
  the used elements (one DMA write per contiguous block), then ``used->idx``, then, as
  §2.7.7.2 requires, the driver's ``used_event`` (EVENT_IDX) or ``avail->flags`` is read *after*
  the index write to decide on the used buffer notification. One notification covers the
  index writes of one flush.
* **Bad input**: when the model stops the queue (a chain error, ``avail->idx`` jumping),
  the function sets DEVICE_NEEDS_RESET and sends a configuration change notification.

Poll mode (``poll_interval_ns``) is a device that never wants doorbells: it keeps
VIRTQ_USED_F_NO_NOTIFY set, or with EVENT_IDX keeps ``avail_event`` one behind its position,
and looks at the available ring on a timer instead.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import cocotb
from cocotb.triggers import Event, Timer

from hdl.virtio.spec import (
    VIRTQ_DESC_BYTES, VirtqAvailFlags, VirtqDescFlags, VirtqUsedFlags,
    vring_need_event,
)
from sim.model.split_ring import SplitRingLayout, decode_desc, encode_used_elem
from sim.model.virtqueue import (
    AvailEventWrite, ChainFault, Element, SplitVirtqueueDevice, UsedElemWrite, UsedIdxWrite,
    walk_chain,
)

from .shadow import MissingBytes, ShadowMemory

__all__ = ["DeviceVirtqueue", "QueueStats"]

log = logging.getLogger(__name__)

READAHEAD_DESCRIPTORS = 8
"""Descriptors read with one DMA read when a chain needs one from the table."""

MAX_TABLE_READ = 1024
"""Largest single read of an indirect table (64 descriptors)."""

_NEXT = int(VirtqDescFlags.NEXT)
_INDIRECT = int(VirtqDescFlags.INDIRECT)
_NO_INTERRUPT = int(VirtqAvailFlags.NO_INTERRUPT)
_NO_NOTIFY = int(VirtqUsedFlags.NO_NOTIFY)


@dataclass
class QueueStats:
    """What one queue did. ``in_order_violations`` counts chains that did not use
    descriptors in ring order under IN_ORDER (legal for the device to accept, but a driver
    bug); ``run_lengths`` counts buffers per used element written."""
    doorbells: int = 0
    fetch_passes: int = 0
    elements: int = 0
    indirect_elements: int = 0
    in_order_violations: int = 0
    used_elems: int = 0
    used_idx_writes: int = 0
    buffers_used: int = 0
    notifications: int = 0
    notifications_suppressed: int = 0
    max_in_flight: int = 0
    run_lengths: Counter = field(default_factory=Counter)


class DeviceVirtqueue:
    """The device side of queue ``index`` at ``layout``.

    Parameters
    ----------
    function : VirtioPciFunction
        Provides ``dma_read`` / ``dma_write``, ``send_queue_interrupt``, ``queue_error`` and
        the ``abort`` event of a reset.
    backend : object
        ``async execute(queue, element) -> written length or None`` (None: aborted).
    in_order, event_idx, indirect : bool
        The negotiated features.
    max_batch : int or None
        Longest run / most elements per ``used->idx`` write (see the model).
    suppress_while_busy : bool
        Set VIRTQ_USED_F_NO_NOTIFY during a service pass (without EVENT_IDX).
    poll_interval_ns : int or None
        Poll mode (see the module docstring).
    """

    def __init__(self, function, index: int, layout: SplitRingLayout, *, backend,
                 in_order: bool, event_idx: bool, indirect: bool,
                 max_batch: int | None = None, suppress_while_busy: bool = True,
                 poll_interval_ns: int | None = None):
        self.function = function
        self.index = index
        self.layout = layout
        self.size = layout.queue_size
        self.backend = backend
        self.in_order = in_order
        self.event_idx = event_idx
        self.indirect = indirect
        self.suppress_while_busy = suppress_while_busy and not event_idx
        self.poll_interval_ns = poll_interval_ns
        self.shadow = ShadowMemory()
        self.shadow.pin(layout.device_addr, layout.avail_event + 2 - layout.device_addr)
        self.shadow.pin(layout.avail_flags, 2)
        self.shadow.pin(layout.used_event, 2)
        self.model = SplitVirtqueueDevice(self.shadow, layout, in_order=in_order,
                                          event_idx=event_idx, indirect_desc=indirect,
                                          max_batch=max_batch)
        self.stats = QueueStats()
        self._doorbell = Event()
        self._completions = Event()
        self._idle = Event()
        self._idle.set()
        self._active = 0
        self._stopping = False
        self._used_idx = 0
        self._next_desc = 0                 # IN_ORDER: where the next chain must start
        self._indirect_tables: dict[int, int] = {}

    # --- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn(self._used_loop())
        if self.poll_interval_ns:
            self._spawn(self._poll_loop())
        else:
            self._spawn(self._doorbell_loop())
            self._doorbell.set()        # look once: buffers may predate DRIVER_OK

    def doorbell(self) -> None:
        self.stats.doorbells += 1
        self._doorbell.set()

    def stop(self) -> None:
        """Begin a reset: loops end at their next step, DMA in progress completes."""
        self._stopping = True
        self._doorbell.set()
        self._completions.set()

    async def drained(self) -> None:
        """Wait until every task of this queue has ended."""
        while self._active:
            self._idle.clear()
            await self._idle.wait()

    def _spawn(self, coro) -> None:
        self._active += 1
        self._idle.clear()

        async def run():
            try:
                await coro
            finally:
                self._active -= 1
                if not self._active:
                    self._idle.set()
        cocotb.start_soon(run())

    # --- DMA ----------------------------------------------------------------------------------
    async def _read(self, addr: int, length: int) -> bytes:
        return await self.function.dma_read(addr, length, control=True)

    async def _write(self, addr: int, data: bytes) -> None:
        await self.function.dma_write(addr, data, control=True)

    async def _write_u16(self, addr: int, value: int) -> None:
        await self._write(addr, (value & 0xFFFF).to_bytes(2, "little"))

    # --- fetching -------------------------------------------------------------------------------
    async def _doorbell_loop(self) -> None:
        while not self._stopping:
            if not self._doorbell.is_set():
                await self._doorbell.wait()
            self._doorbell.clear()
            if self._stopping:
                return
            await self._service()

    async def _poll_loop(self) -> None:
        if self.event_idx:
            await self._write_u16(self.layout.avail_event, 0xFFFF)
        else:
            await self._write_u16(self.layout.used_flags, _NO_NOTIFY)
        while not self._stopping:
            await Timer(self.poll_interval_ns, "ns")
            if self._stopping:
                return
            while await self._fetch():
                pass

    async def _service(self) -> None:
        while True:
            if self.suppress_while_busy:
                await self._write_u16(self.layout.used_flags, _NO_NOTIFY)
            while await self._fetch():
                pass
            if not self.suppress_while_busy or self._stopping or self.model.error:
                return
            await self._write_u16(self.layout.used_flags, 0)
            if not await self._fetch():
                return

    async def _fetch(self) -> list[Element]:
        """One pass over the available ring; dispatches and returns the new elements."""
        model = self.model
        if self._stopping or model.error is not None:
            return []
        self.stats.fetch_passes += 1
        shadow = self.shadow
        shadow.invalidate()
        self._indirect_tables.clear()
        layout = self.layout
        raw = await self._read(layout.avail_idx, 2)
        shadow.fill(layout.avail_idx, raw)
        pending = (int.from_bytes(raw, "little") - model.last_avail_idx) & 0xFFFF
        if 0 < pending <= self.size:
            start = model.last_avail_idx % self.size
            first = min(pending, self.size - start)
            entry = layout.avail_entry(start)
            shadow.fill(entry, await self._read(entry, 2 * first))
            if pending > first:
                entry = layout.avail_entry(0)
                shadow.fill(entry, await self._read(entry, 2 * (pending - first)))
            for k in range(pending):
                head = model.ring.avail_entry((model.last_avail_idx + k) % self.size)
                if not await self._prefetch_chain(head):
                    break
        if self._stopping:
            return []
        elements = model.fetch()
        # The model logs every write it makes; this queue carries them out and clears the
        # log, so it does not grow with the run.
        writes = list(model.writes)
        model.writes.clear()
        for element in elements:
            self._account(element)
            self._spawn(self._run_element(element))
        self.stats.max_in_flight = max(self.stats.max_in_flight, model.in_flight)
        for write in writes:
            if isinstance(write, AvailEventWrite):
                value = write.value if not self.poll_interval_ns else write.value - 1
                await self._write_u16(layout.avail_event, value)
        if model.error is not None:
            await self.function.queue_error(self, model.error)
        return elements

    async def _prefetch_chain(self, head: int) -> bool:
        """Fetch what the model needs to walk ``head``'s chain; False on a chain fault."""
        while True:
            try:
                walk_chain(self.model.ring, head, indirect_desc=self.indirect,
                           max_chain_len=self.model.max_chain_len)
                return True
            except MissingBytes as miss:
                await self._fill(miss)
                if self._stopping:
                    return False
            except ChainFault:
                return False

    async def _fill(self, miss: MissingBytes) -> None:
        layout = self.layout
        table_end = layout.desc_addr + VIRTQ_DESC_BYTES * self.size
        if layout.desc_addr <= miss.addr < table_end:
            index = (miss.addr - layout.desc_addr) // VIRTQ_DESC_BYTES
            count = min(READAHEAD_DESCRIPTORS, self.size - index)
            base = layout.desc_entry(index)
            data = await self._read(base, VIRTQ_DESC_BYTES * count)
            self.shadow.fill(base, data)
            for i in range(count):
                desc = decode_desc(data[VIRTQ_DESC_BYTES * i:VIRTQ_DESC_BYTES * (i + 1)])
                if desc.flags & _INDIRECT:
                    self._indirect_tables[desc.addr] = desc.len
            return
        end = miss.addr + miss.length
        for table, length in self._indirect_tables.items():
            if table <= miss.addr < table + length:
                end = table + length
                break
        length = min(end - miss.addr, MAX_TABLE_READ)
        self.shadow.fill(miss.addr, await self._read(miss.addr, length))

    def _account(self, element: Element) -> None:
        """Statistics, and the IN_ORDER descriptor rule checked on the driver (§2.7.9)."""
        self.stats.elements += 1
        ring = self.model.ring
        chain = [element.head]
        desc = ring.desc(element.head)
        while desc.flags & _NEXT and not desc.flags & _INDIRECT:
            chain.append(desc.next)
            desc = ring.desc(desc.next)
        if desc.flags & _INDIRECT:
            self.stats.indirect_elements += 1
        if self.in_order:
            expected = [(self._next_desc + i) % self.size for i in range(len(chain))]
            if chain != expected:
                self.stats.in_order_violations += 1
                log.warning("queue %d: IN_ORDER chain uses descriptors %s, expected %s",
                            self.index, chain, expected)
            self._next_desc = (chain[-1] + 1) % self.size

    # --- completing ---------------------------------------------------------------------------
    async def _run_element(self, element: Element) -> None:
        written = await self.backend.execute(self, element)
        if written is None or self._stopping:
            return
        self.model.complete(element.seq, written)
        self._completions.set()

    async def _used_loop(self) -> None:
        while True:
            if not self._completions.is_set():
                await self._completions.wait()
            self._completions.clear()
            if self._stopping:
                return
            writes = self.model.flush()
            self.model.writes.clear()
            if writes:
                await self._publish(writes)

    async def _publish(self, writes) -> None:
        layout = self.layout
        elems: list[UsedElemWrite] = []
        notify = False
        for write in writes:
            if isinstance(write, UsedElemWrite):
                elems.append(write)
                continue
            if not isinstance(write, UsedIdxWrite):
                continue        # the model's own notification decision is redone below
            await self._write_elems(elems)
            old = self._used_idx
            await self._write_u16(layout.used_idx, write.idx)
            self._used_idx = write.idx
            advance = (write.idx - old) & 0xFFFF
            self.stats.used_idx_writes += 1
            self.stats.buffers_used += advance
            if self.in_order:
                self.stats.run_lengths[advance] += 1
            else:
                self.stats.run_lengths[1] += len(elems)
            self.stats.used_elems += len(elems)
            elems = []
            # §2.7.7.2: the suppression state as the driver left it after this index write.
            if self.event_idx:
                raw = await self._read(layout.used_event, 2)
                self.shadow.fill(layout.used_event, raw)
                notify |= vring_need_event(int.from_bytes(raw, "little"), write.idx, old)
            else:
                raw = await self._read(layout.avail_flags, 2)
                self.shadow.fill(layout.avail_flags, raw)
                notify |= not int.from_bytes(raw, "little") & _NO_INTERRUPT
            if self._stopping:
                return
        if notify:
            self.stats.notifications += 1
            await self.function.send_queue_interrupt(self)
        else:
            self.stats.notifications_suppressed += 1

    async def _write_elems(self, elems: list[UsedElemWrite]) -> None:
        """The used elements, one DMA write per run of consecutive slots."""
        i = 0
        while i < len(elems):
            j = i + 1
            while j < len(elems) and elems[j].slot == elems[j - 1].slot + 1:
                j += 1
            data = b"".join(encode_used_elem(e.id, e.len) for e in elems[i:j])
            await self._write(self.layout.used_entry(elems[i].slot), data)
            i = j
