"""The driver side of a split virtqueue, the way Linux's ``virtio_ring.c`` runs it.

:class:`SplitVirtqueue` owns one queue's rings in host memory and keeps the driver's
private state beside them (Linux's ``struct vring_virtqueue``): the free descriptor list,
the shadow of ``avail->idx`` and ``avail->flags``, ``last_used_idx``, and per head the
token and resources of the buffer. Every method is synchronous: it only touches host memory,
as driver code does between MMIO accesses. The one MMIO access, the doorbell, is the
``notify`` coroutine the transport supplies.

What it does, with the Linux function it imitates and the virtio 1.2 section:

* creation (``vring_create_virtqueue_split``, §2.7): one zeroed block, descriptor table
  first, the available ring right after it, the used ring at the next ``used_align``
  boundary; the free list links every descriptor ``i -> i + 1``;
* :meth:`add` (``virtqueue_add_split``, §2.7.13): a buffer of device-readable then
  device-writable pieces, through an indirect table when INDIRECT_DESC is negotiated and
  the buffer has more than one piece (§2.7.5.3), otherwise one descriptor per piece;
  descriptors come from the free list, or with IN_ORDER in ring order with
  ``next = x + 1`` wrapping at the end of the table (§2.7.9, §2.7.5); the head goes into
  the next available ring slot and ``avail->idx`` is published at once;
* :meth:`kick_prepare` (``virtqueue_kick_prepare_split``, §2.7.10): with EVENT_IDX,
  ``vring_need_event(avail_event, new, old)``; otherwise no kick while
  ``used->flags`` has VIRTQ_USED_F_NO_NOTIFY;
* :meth:`get_buf` (``virtqueue_get_buf_ctx_split``, §2.7.8, §2.7.9): one buffer per call.
  With IN_ORDER a used element may stand for a run: its ``id`` is the head of the run's
  last buffer, and every outstanding buffer up to that one is complete, the skipped ones
  with their whole device-writable length (§2.7.9); each returned buffer advances
  ``last_used_idx`` by one. After each buffer ``used_event = last_used_idx`` unless
  interrupts are disabled (§2.7.7);
* :meth:`disable_cb` / :meth:`enable_cb_prepare` / :meth:`poll` / :meth:`enable_cb`
  (``virtqueue_disable_cb_split`` ...): interrupt suppression with VIRTQ_AVAIL_F_NO_INTERRUPT,
  or with EVENT_IDX through ``used_event`` (§2.7.7);
* :meth:`interrupt` (``vring_interrupt``): nothing to do without new used entries
  (``IRQ_NONE``), otherwise run the callback;
* :meth:`detach_unused_buf` (``virtqueue_detach_unused_buf``): after a reset, hand back the
  tokens of buffers the device never returned.

A device that breaks the ring rules makes the queue *broken* (Linux's ``BAD_RING``):
:class:`VirtqueueBroken` is raised and the queue refuses further work. Besides Linux's own
checks (an ``id`` that is no outstanding head), this model also refuses a used element whose
run does not fit the ``used->idx`` advance, and a used length beyond the buffer's writable
bytes, so that tests catch such device bugs at once.
"""
from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from hdl.virtio.spec import (
    VIRTQ_DESC_BYTES, VirtqAvailFlags, VirtqDescFlags, VirtqUsedFlags, avail_ring_bytes,
    check_queue_size, desc_table_bytes, used_ring_bytes, vring_need_event,
)
from sim.model.split_ring import RawDesc, SplitRing, SplitRingLayout, encode_desc

from .memory import DmaKind, HostMemory

__all__ = ["SplitVirtqueue", "VirtqueueStats", "VirtqueueBroken", "NoSpace"]

log = logging.getLogger(__name__)

_NEXT = int(VirtqDescFlags.NEXT)
_WRITE = int(VirtqDescFlags.WRITE)
_INDIRECT = int(VirtqDescFlags.INDIRECT)
_NO_INTERRUPT = int(VirtqAvailFlags.NO_INTERRUPT)
_NO_NOTIFY = int(VirtqUsedFlags.NO_NOTIFY)

RING_ALIGN = 4096
"""Alignment of the ring block (Linux allocates it with ``dma_alloc_coherent``: a page)."""

USED_ALIGN = 64
"""Alignment of the used ring inside the block (``SMP_CACHE_BYTES``, what virtio_pci_modern
passes to ``vring_create_virtqueue``)."""


class VirtqueueBroken(RuntimeError):
    """The device broke the ring rules; the queue is unusable until the device is reset."""


class NoSpace(Exception):
    """Not enough free descriptors for the buffer (Linux returns ``-ENOSPC``)."""


@dataclass
class VirtqueueStats:
    """Counters of one queue, driver side.

    ``kick_checks`` counts :meth:`SplitVirtqueue.kick_prepare` calls, ``kicks`` the ones
    that asked for a notification and ``kicks_suppressed`` the others. ``used_entries`` counts
    used ring elements read, ``buffers`` the buffers they returned, and ``run_lengths`` how
    many buffers each element returned (always 1 without IN_ORDER). ``interrupts`` counts
    :meth:`SplitVirtqueue.interrupt` calls that found work, ``spurious_interrupts`` those
    that found none.
    """
    adds: int = 0
    indirect_adds: int = 0
    ring_descriptors: int = 0
    no_space: int = 0
    kick_checks: int = 0
    kicks: int = 0
    kicks_suppressed: int = 0
    used_entries: int = 0
    buffers: int = 0
    interrupts: int = 0
    spurious_interrupts: int = 0
    run_lengths: Counter = field(default_factory=Counter)

    @property
    def mean_run_length(self) -> float:
        """Buffers per used ring element (the in-order batching factor)."""
        return self.buffers / self.used_entries if self.used_entries else 0.0

    def merge(self, other: VirtqueueStats) -> None:
        for name in ("adds", "indirect_adds", "ring_descriptors", "no_space", "kick_checks",
                     "kicks", "kicks_suppressed", "used_entries", "buffers", "interrupts",
                     "spurious_interrupts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.run_lengths.update(other.run_lengths)


@dataclass(slots=True)
class _DescState:
    """What the driver keeps per outstanding head (``vring_desc_state_split`` and the
    ``desc_extra`` entries of its chain)."""
    token: object
    chain: list[int]            # ring descriptor indices, head first
    in_len: int                 # device-writable bytes of the buffer
    indirect: int | None        # address of the indirect table, if one was used


class SplitVirtqueue:
    """One split virtqueue, driver side.

    Parameters
    ----------
    mem : HostMemory
        Where the rings, indirect tables live.
    index : int
        The queue's index (what the doorbell carries).
    size : int
        Queue Size, a power of two 1..32768 (§2.7).
    in_order, event_idx, indirect : bool
        Negotiated VIRTIO_F_IN_ORDER, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC.
    notify : coroutine function, optional
        ``notify(queue)`` writes the doorbell (the transport's ``vp_notify``).
    callback : callable, optional
        ``callback(queue)``, run by :meth:`interrupt` when there is work. Without a callback
        the queue starts with interrupts suppressed, as Linux does.

    Attributes
    ----------
    layout : SplitRingLayout
        Addresses of the three areas, to write into ``queue_desc`` / ``queue_driver`` /
        ``queue_device``.
    num_free : int
        Free descriptors.
    stats : VirtqueueStats
    """

    def __init__(self, mem: HostMemory, index: int, size: int, *, in_order: bool = False,
                 event_idx: bool = False, indirect: bool = False,
                 notify: Callable[[SplitVirtqueue], Awaitable[None]] | None = None,
                 callback: Callable[[SplitVirtqueue], None] | None = None):
        check_queue_size(size)
        self.mem = mem
        self.index = index
        self.size = size
        self.in_order = in_order
        self.event_idx = event_idx
        self.indirect = indirect
        self._notify = notify
        self.callback = callback
        self.stats = VirtqueueStats()
        self.broken = False

        # vring_init(): descriptor table, then avail (with used_event), then used aligned.
        desc_bytes = desc_table_bytes(size)
        used_offset = -(-(desc_bytes + avail_ring_bytes(size)) // USED_ALIGN) * USED_ALIGN
        total = used_offset + used_ring_bytes(size)
        self.block = mem.alloc(total, align=RING_ALIGN, kind=DmaKind.RING)
        mem.write(self.block, bytes(total))
        self.layout = SplitRingLayout(size, self.block, self.block + desc_bytes,
                                      self.block + used_offset)
        self.ring = SplitRing(mem, self.layout)

        self.num_free = size
        self.free_head = 0
        # desc_extra[i].next: the free list (and, inside a chain, the chain's links).
        self._next = [(i + 1) % size for i in range(size)]
        self._state: dict[int, _DescState] = {}
        self.avail_idx_shadow = 0
        self.avail_flags_shadow = 0
        self.num_added = 0
        self.last_used_idx = 0
        self.event_triggered = False
        # IN_ORDER: outstanding heads in avail order, and the used element being consumed.
        self._outstanding: deque[int] = deque()
        self._batch: tuple[int, int] | None = None
        if callback is None:
            self.avail_flags_shadow |= _NO_INTERRUPT
            if not event_idx:
                self.ring.set_avail_flags(self.avail_flags_shadow)

    def __repr__(self) -> str:
        return (f"SplitVirtqueue(index={self.index}, size={self.size}, "
                f"in_order={self.in_order}, event_idx={self.event_idx}, "
                f"indirect={self.indirect}, outstanding={len(self._state)})")

    @property
    def outstanding(self) -> int:
        """Buffers added and not yet returned by :meth:`get_buf`."""
        return len(self._state)

    def free_rings(self) -> None:
        """Give the ring block and any indirect tables back to host memory."""
        for state in self._state.values():
            if state.indirect is not None:
                self.mem.free(state.indirect)
        self._state.clear()
        self.mem.free(self.block)

    def _bad_ring(self, message: str) -> None:
        self.broken = True
        log.error("virtqueue %d broken: %s", self.index, message)
        raise VirtqueueBroken(f"virtqueue {self.index}: {message}")

    # --- making buffers available (§2.7.13) ---------------------------------------------------
    def add(self, out_sgs: Sequence[tuple[int, int]], in_sgs: Sequence[tuple[int, int]],
            token: object) -> int:
        """Expose a buffer: ``out_sgs`` device-readable then ``in_sgs`` device-writable
        ``(addr, len)`` pieces (§2.7.4.2). Returns the head descriptor index; raises
        :class:`NoSpace` when the descriptors are not there."""
        if self.broken:
            raise VirtqueueBroken(f"virtqueue {self.index} is broken")
        if token is None:
            raise ValueError("a buffer needs a token other than None")
        pieces = [(addr, len_, 0) for addr, len_ in out_sgs] \
            + [(addr, len_, _WRITE) for addr, len_ in in_sgs]
        total = len(pieces)
        if total == 0:
            raise ValueError("a buffer has at least one piece (virtio 1.2 §2.7.13.1)")
        # virtqueue_use_indirect(): more than one piece and something free.
        use_indirect = self.indirect and total > 1 and self.num_free > 0
        descs_used = 1 if use_indirect else total
        if self.num_free < descs_used:
            self.stats.no_space += 1
            raise NoSpace(f"virtqueue {self.index}: {descs_used} descriptors needed, "
                          f"{self.num_free} free")
        head = self.free_head
        indirect = None
        if use_indirect:
            # alloc_indirect_split(): entries chained 0 -> 1 -> ..., every next = i + 1.
            table = b"".join(
                encode_desc(RawDesc(addr, len_, flags | (_NEXT if i + 1 < total else 0), i + 1))
                for i, (addr, len_, flags) in enumerate(pieces))
            indirect = self.mem.alloc(len(table), align=VIRTQ_DESC_BYTES, kind=DmaKind.INDIRECT)
            self.mem.write(indirect, table)
            self.ring.set_desc(head, RawDesc(indirect, len(table), _INDIRECT,
                                             self._link(head)))
            chain = [head]
            self.stats.indirect_adds += 1
        else:
            chain = []
            i = head
            for n, (addr, len_, flags) in enumerate(pieces):
                chain.append(i)
                nxt = self._link(i)
                last = n + 1 == total
                self.ring.set_desc(i, RawDesc(addr, len_, flags | (0 if last else _NEXT), nxt))
                i = nxt
        self.free_head = (head + descs_used) % self.size if self.in_order \
            else self._next[chain[-1]]
        self.num_free -= descs_used
        self._state[head] = _DescState(token, chain, sum(p[1] for p in pieces if p[2]),
                                       indirect)
        if self.in_order:
            self._outstanding.append(head)
        slot = self.avail_idx_shadow & (self.size - 1)
        self.ring.set_avail_entry(slot, head)
        self.avail_idx_shadow = (self.avail_idx_shadow + 1) & 0xFFFF
        self.ring.set_avail_idx(self.avail_idx_shadow)
        self.num_added += 1
        self.stats.adds += 1
        self.stats.ring_descriptors += descs_used
        return head

    def _link(self, i: int) -> int:
        """The descriptor after ``i``: ring order with IN_ORDER (``next = x + 1``, wrapping,
        §2.7.9), the free list otherwise."""
        return (i + 1) % self.size if self.in_order else self._next[i]

    # --- notifying the device (§2.7.10) --------------------------------------------------------
    def kick_prepare(self) -> bool:
        """Does the device want a notification for the buffers added since the last call?"""
        new = self.avail_idx_shadow
        old = (new - self.num_added) & 0xFFFF
        self.num_added = 0
        self.stats.kick_checks += 1
        if self.event_idx:
            needed = vring_need_event(self.ring.avail_event(), new, old)
        else:
            needed = not self.ring.used_flags() & _NO_NOTIFY
        if needed:
            self.stats.kicks += 1
        else:
            self.stats.kicks_suppressed += 1
        return needed

    async def notify(self) -> None:
        """Write the doorbell (``virtqueue_notify``)."""
        if self._notify is None:
            raise RuntimeError(f"virtqueue {self.index} has no notify function")
        await self._notify(self)

    async def kick(self) -> bool:
        """``virtqueue_kick``: :meth:`kick_prepare`, then the doorbell if it is wanted."""
        if self.kick_prepare():
            await self.notify()
            return True
        return False

    # --- taking used buffers back (§2.7.8, §2.7.9) ----------------------------------------------
    def used_idx(self) -> int:
        return self.ring.used_idx()

    def more_used(self) -> bool:
        return self._batch is not None or self.last_used_idx != self.ring.used_idx()

    def get_buf(self) -> tuple[object, int] | None:
        """The next used buffer as ``(token, written length)``, or None."""
        if self.broken:
            raise VirtqueueBroken(f"virtqueue {self.index} is broken")
        if self.in_order:
            head, length = self._next_in_order()
            if head is None:
                return None
        else:
            if self.last_used_idx == self.ring.used_idx():
                return None
            head, length = self.ring.used_elem(self.last_used_idx & (self.size - 1))
            if head >= self.size:
                self._bad_ring(f"id {head} out of range")
            if head not in self._state:
                self._bad_ring(f"id {head} is not a head")
            self.stats.used_entries += 1
            self.stats.run_lengths[1] += 1
        state = self._state[head]
        if length > state.in_len:
            self._bad_ring(f"used length {length} of id {head} exceeds its {state.in_len} "
                           f"device-writable bytes")
        token = self._detach(head)
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        self.stats.buffers += 1
        if not self.avail_flags_shadow & _NO_INTERRUPT:
            self.ring.set_used_event(self.last_used_idx)
        return token, length

    def _next_in_order(self) -> tuple[int | None, int]:
        if self._batch is None:
            used_idx = self.ring.used_idx()
            if self.last_used_idx == used_idx:
                return None, 0
            id_, length = self.ring.used_elem(self.last_used_idx & (self.size - 1))
            if id_ not in self._state:
                self._bad_ring(f"id {id_} is not an outstanding head")
            run = self._outstanding.index(id_) + 1
            if run > (used_idx - self.last_used_idx) & 0xFFFF:
                self._bad_ring(f"used element {self.last_used_idx} (id {id_}) returns {run} "
                               f"buffers, used->idx advanced only to {used_idx}")
            self._batch = (id_, length)
            self.stats.used_entries += 1
            self.stats.run_lengths[run] += 1
        head = self._outstanding.popleft()
        batch_id, batch_len = self._batch
        if head == batch_id:
            self._batch = None
            return head, batch_len
        # A skipped buffer was used completely (§2.7.9).
        return head, self._state[head].in_len

    def _detach(self, head: int) -> object:
        """``detach_buf_split``: give the chain's descriptors back."""
        state = self._state.pop(head)
        self.num_free += len(state.chain)
        if not self.in_order:
            self._next[state.chain[-1]] = self.free_head
            self.free_head = head
        if state.indirect is not None:
            self.mem.free(state.indirect)
        return state.token

    def detach_unused_buf(self) -> list[object]:
        """After a device reset: the tokens of every buffer not returned, in head order,
        and the queue emptied as if they had been used."""
        tokens = [self._detach(head) for head in sorted(self._state)]
        self._outstanding.clear()
        self._batch = None
        return tokens

    # --- interrupt suppression (§2.7.7) ---------------------------------------------------------
    def disable_cb(self) -> None:
        """Ask the device not to interrupt (``virtqueue_disable_cb_split``)."""
        if self.avail_flags_shadow & _NO_INTERRUPT:
            return
        self.avail_flags_shadow |= _NO_INTERRUPT
        # The device has interrupted once already and will not again before enable.
        if self.event_triggered:
            return
        if self.event_idx:
            # Linux's own "hack": an event index the device is unlikely to cross soon.
            self.ring.set_used_event(0)
        else:
            self.ring.set_avail_flags(self.avail_flags_shadow)

    def enable_cb_prepare(self) -> int:
        """Re-enable interrupts; returns the position to :meth:`poll` from."""
        if self.event_triggered:
            self.event_triggered = False
        if self.avail_flags_shadow & _NO_INTERRUPT:
            self.avail_flags_shadow &= ~_NO_INTERRUPT
            if not self.event_idx:
                self.ring.set_avail_flags(self.avail_flags_shadow)
        self.ring.set_used_event(self.last_used_idx)
        return self.last_used_idx

    def poll(self, last_used_idx: int) -> bool:
        """True when used entries arrived after ``last_used_idx``."""
        return last_used_idx != self.ring.used_idx()

    def enable_cb(self) -> bool:
        """Re-enable interrupts; False if buffers are already waiting (the caller must
        process them, or it could miss the interrupt)."""
        return not self.poll(self.enable_cb_prepare())

    def interrupt(self) -> bool:
        """``vring_interrupt``: run the callback if there is work; False means IRQ_NONE."""
        if not self.more_used():
            self.stats.spurious_interrupts += 1
            return False
        if self.broken:
            return True
        self.stats.interrupts += 1
        if self.event_idx:
            self.event_triggered = True
        if self.callback is not None:
            self.callback(self)
        return True
