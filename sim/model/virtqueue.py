"""Golden model of the device side of a split virtqueue, and a checker for observed used rings.

Written from virtio 1.2 §2.7 (split virtqueues), §2.7.9 (in-order use of descriptors),
§2.7.7 / §2.7.10 (notification suppression) and §6 (VIRTIO_F_IN_ORDER, INDIRECT_DESC,
EVENT_IDX), independently of the RTL. Pure Python.

Two ways to use it:

* **Exact mode**, :class:`SplitVirtqueueDevice`: given a driver's rings in memory, it fetches
  elements (descriptor chains walked per §2.7.5, §2.7.5.3), and given the order in which a
  backend completes them and a batching policy, it writes the used ring exactly as the device
  must and returns the sequence of device writes (:class:`UsedElemWrite`, :class:`UsedIdxWrite`,
  :class:`UsedNotify`, :class:`AvailEventWrite`). Batching is explicit:
  :meth:`~SplitVirtqueueDevice.flush` writes out "what is ready now", so a test reproduces a
  hardware engine's timing-dependent batching by choosing where the flushes are.
* **Checker mode**, :class:`UsedRingChecker`: reads an observed stream of device writes the
  way a driver would and raises :class:`UsedRingViolation` at the first thing a correct device
  cannot do (a buffer used twice, out of avail order under IN_ORDER, a stale or wrong used
  entry, a skipped buffer that was not completely written, ``used->idx`` not advancing, a used
  buffer notification missing). It accepts any legal batching, so it can judge an engine whose
  runs depend on timing.

The rules both modes implement, in one place:

* Without IN_ORDER: one used element per completed buffer, in completion order
  (the project's contract; the spec allows any order). ``used->idx`` advances by the number of
  elements written before it; one idx write may cover several elements.
* With IN_ORDER (§2.7.9): buffers are used in the order they were made available. A *run* of
  consecutive buffers is returned by ONE used element, written at the ring slot of the run's
  first buffer (``used->idx % Queue Size`` before the run), with ``id`` = the head of the run's
  LAST buffer and ``len`` = the bytes written into that last buffer, followed by ``used->idx``
  advancing by the run length. "The skipped buffers ... are assumed to have been used (read or
  written) by the device completely" (§2.7.9): a buffer may sit inside a run only if the bytes
  written equal its whole device-writable length. A buffer written only partly ends its run.
* Notifications (§2.7.7.2), decided after each ``used->idx`` write from the driver area as
  read after that write: without EVENT_IDX, notify unless ``avail->flags`` has
  VIRTQ_AVAIL_F_NO_INTERRUPT; with EVENT_IDX, notify when
  ``vring_need_event(used_event, new_idx, old_idx)`` (the flags are ignored). With EVENT_IDX
  the device also keeps ``avail_event`` equal to the index of the next available entry it will
  consume, so that the driver notifies it of new buffers (§2.7.10).
* Bad driver input (`docs/robustness.md`): a chain error (:class:`ErrorKind`) or ``avail->idx``
  moving by more than the queue size stops the queue at that avail entry: nothing from it on
  is consumed, the device sets DEVICE_NEEDS_RESET, and elements fetched before it complete
  normally.
* All ring indices are 16-bit and wrap (§2.7.13.3); element sequence numbers do not.
"""
from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

from hdl.virtio.spec import (
    VIRTQ_DESC_BYTES, VirtqAvailFlags, VirtqDescFlags, check_queue_size, vring_need_event,
)
from sim.model.memory import GuestMemory
from sim.model.split_ring import SplitRing, SplitRingLayout, decode_desc

__all__ = [
    "ErrorKind", "QueueError", "ChainFault", "Descriptor", "Element", "walk_chain",
    "UsedElemWrite", "UsedIdxWrite", "UsedNotify", "AvailEventWrite", "DeviceWrite",
    "SplitVirtqueueDevice", "UsedRingViolation", "CheckerReport", "UsedRingChecker",
]

logger = logging.getLogger(__name__)

_NEXT = int(VirtqDescFlags.NEXT)
_WRITE = int(VirtqDescFlags.WRITE)
_INDIRECT = int(VirtqDescFlags.INDIRECT)
_NO_INTERRUPT = int(VirtqAvailFlags.NO_INTERRUPT)


# --- Elements and descriptor chains ------------------------------------------------------------

class ErrorKind(enum.Enum):
    """Driver errors after which the queue stops and the device needs a reset.

    The spec forbids each of these to the driver (§2.7.5.2, §2.7.5.3.1, §2.7.4.2, §2.7.6.1) and
    leaves the device's reaction open; this project's reaction is in `docs/robustness.md`.
    When one chain has several faults, the first one met while following ``next`` is
    reported, except READABLE_AFTER_WRITABLE, which is looked for once the chain is known.
    Which kind is reported is diagnostic only: every kind has the same outcome.
    """
    AVAIL_IDX_JUMP = "avail->idx moved by more than the queue size (or backwards)"
    HEAD_OUT_OF_RANGE = "available ring entry is not a descriptor index below the queue size"
    NEXT_OUT_OF_RANGE = "next is outside the descriptor table or indirect table"
    CHAIN_TOO_LONG = "chain longer than its table (a loop) or than the device's chain limit"
    INDIRECT_NOT_NEGOTIATED = "VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC"
    INDIRECT_WITH_NEXT = "VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT both set"
    NESTED_INDIRECT = "VIRTQ_DESC_F_INDIRECT inside an indirect table"
    BAD_INDIRECT_LEN = "indirect table length is 0 or not a multiple of 16"
    READABLE_AFTER_WRITABLE = "device-readable descriptor after a device-writable one"


@dataclass(frozen=True, slots=True)
class QueueError:
    """Why and where a queue stopped: the avail index of the entry that was not consumed."""
    kind: ErrorKind
    avail_idx: int
    head: int | None
    detail: str


class ChainFault(Exception):
    """A descriptor chain breaks one of the rules of :class:`ErrorKind`."""

    def __init__(self, kind: ErrorKind, detail: str):
        super().__init__(f"{kind.name}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One buffer element of an element, as handed to a backend: indirect tables are
    expanded, the descriptor that points to a table does not appear."""
    addr: int
    len: int
    write: bool


@dataclass(frozen=True, slots=True)
class Element:
    """One available buffer as the device fetched it.

    ``seq`` counts elements fetched from this queue since reset (0, 1, 2, ...; it does not
    wrap) and so is the buffer's position in avail order; ``avail_idx`` is the 16-bit
    available ring index it came from; ``head`` the descriptor index the used ring must
    return as ``id``; ``readable_len`` / ``writable_len`` total the device-readable and
    device-writable bytes of ``descriptors``.
    """
    seq: int
    avail_idx: int
    head: int
    descriptors: tuple[Descriptor, ...]
    readable_len: int = field(init=False)
    writable_len: int = field(init=False)

    def __post_init__(self):
        writable = sum(d.len for d in self.descriptors if d.write)
        object.__setattr__(self, "writable_len", writable)
        object.__setattr__(self, "readable_len",
                           sum(d.len for d in self.descriptors) - writable)


def walk_chain(ring: SplitRing, head: int, *, indirect_desc: bool,
               max_chain_len: int | None = None) -> tuple[Descriptor, ...]:
    """Read the descriptor chain that starts at ``head`` (virtio 1.2 §2.7.5, §2.7.5.3).

    Follows ``next`` while VIRTQ_DESC_F_NEXT is set; a descriptor with
    VIRTQ_DESC_F_INDIRECT (allowed only as the last of the chain, and only when
    ``indirect_desc``) is replaced by the chain in its table, which starts at entry 0; its
    own VIRTQ_DESC_F_WRITE flag is ignored (§2.7.5.3.2). Loops are caught by length: a
    chain visiting more descriptors than its table holds (the queue size, or ``len / 16``
    for an indirect table) must revisit one. ``max_chain_len`` is the device's own limit on
    descriptors per element (§2.7.4.1 allows "a reasonable limit"); ``None`` means none.

    Raises :class:`ChainFault` for any :class:`ErrorKind` other than AVAIL_IDX_JUMP.
    """
    queue_size = ring.layout.queue_size
    if not 0 <= head < queue_size:
        raise ChainFault(ErrorKind.HEAD_OUT_OF_RANGE,
                         f"head {head} with queue size {queue_size}")
    raw: list[tuple[int, int, int, int | None, int]] = []  # addr, len, flags, table, index
    index, visited = head, 0
    while True:
        visited += 1
        if visited > queue_size:
            raise ChainFault(ErrorKind.CHAIN_TOO_LONG,
                             f"more than {queue_size} descriptors from head {head} (a loop)")
        desc = ring.desc(index)
        if desc.flags & _INDIRECT:
            if not indirect_desc:
                raise ChainFault(ErrorKind.INDIRECT_NOT_NEGOTIATED, f"descriptor {index}")
            if desc.flags & _NEXT:
                raise ChainFault(ErrorKind.INDIRECT_WITH_NEXT, f"descriptor {index}")
            if desc.len == 0 or desc.len % VIRTQ_DESC_BYTES:
                raise ChainFault(ErrorKind.BAD_INDIRECT_LEN,
                                 f"descriptor {index} has len {desc.len}")
            raw += _walk_indirect(ring, desc.addr, desc.len // VIRTQ_DESC_BYTES, index,
                                  max_chain_len)
            break
        raw.append((desc.addr, desc.len, desc.flags, None, index))
        if not desc.flags & _NEXT:
            break
        if desc.next >= queue_size:
            raise ChainFault(ErrorKind.NEXT_OUT_OF_RANGE,
                             f"descriptor {index} has next {desc.next}, queue size {queue_size}")
        index = desc.next
    if max_chain_len is not None and len(raw) > max_chain_len:
        raise ChainFault(ErrorKind.CHAIN_TOO_LONG,
                         f"{len(raw)} descriptors, more than the device limit of {max_chain_len}")
    out = []
    seen_write = False
    for addr, len_, flags, table, index in raw:
        write = bool(flags & _WRITE)
        if seen_write and not write:
            raise ChainFault(ErrorKind.READABLE_AFTER_WRITABLE,
                             f"descriptor {index}" if table is None
                             else f"indirect entry {index} of descriptor {table}")
        seen_write = write
        out.append(Descriptor(addr, len_, write))
    return tuple(out)


def _walk_indirect(ring: SplitRing, table: int, entries: int, parent: int,
                   max_chain_len: int | None) -> list[tuple[int, int, int, int | None, int]]:
    raw = []
    index = 0
    while True:
        # A chain visiting more entries than the table holds has looped; a chain longer than
        # the device limit is refused without walking the rest of a huge table.
        if len(raw) == entries or (max_chain_len is not None and len(raw) > max_chain_len):
            raise ChainFault(ErrorKind.CHAIN_TOO_LONG,
                             f"indirect table of descriptor {parent} loops or exceeds the "
                             f"device limit ({entries} entries)")
        desc = decode_desc(ring.mem.read(table + VIRTQ_DESC_BYTES * index, VIRTQ_DESC_BYTES))
        if desc.flags & _INDIRECT:
            raise ChainFault(ErrorKind.NESTED_INDIRECT,
                             f"indirect entry {index} of descriptor {parent}")
        raw.append((desc.addr, desc.len, desc.flags, parent, index))
        if not desc.flags & _NEXT:
            return raw
        if desc.next >= entries:
            raise ChainFault(ErrorKind.NEXT_OUT_OF_RANGE,
                             f"indirect entry {index} of descriptor {parent} has next "
                             f"{desc.next}, table has {entries} entries")
        index = desc.next


# --- Device writes --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UsedElemWrite:
    """The device wrote ``used->ring[slot] = {id, len}``."""
    slot: int
    id: int
    len: int


@dataclass(frozen=True, slots=True)
class UsedIdxWrite:
    """The device wrote ``used->idx = idx``, then read the driver area to decide whether to
    notify: ``used_event`` (with EVENT_IDX, else ``None``) and ``avail_flags`` are what it read."""
    idx: int
    used_event: int | None = None
    avail_flags: int = 0


@dataclass(frozen=True, slots=True)
class UsedNotify:
    """The device sent a used buffer notification for the queue (MSI-X message or INTx + ISR
    queue bit, §4.1.5.3)."""


@dataclass(frozen=True, slots=True)
class AvailEventWrite:
    """The device wrote ``avail_event = value`` (EVENT_IDX only, §2.7.10)."""
    value: int


DeviceWrite = Union[UsedElemWrite, UsedIdxWrite, UsedNotify, AvailEventWrite]


# --- Exact device model -----------------------------------------------------------------------

class SplitVirtqueueDevice:
    """The device side of one split virtqueue, writing the used ring into ``mem``.

    Parameters
    ----------
    mem : GuestMemory
        Host memory holding the rings (and receiving the used ring writes).
    layout : SplitRingLayout
        Where the queue is (``queue_desc`` / ``queue_driver`` / ``queue_device``).
    in_order, event_idx, indirect_desc : bool
        Negotiated VIRTIO_F_IN_ORDER, VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC.
    max_batch : int or None
        Most buffers one ``used->idx`` write may cover: with IN_ORDER the longest run per used
        element, without it the most used elements written before one idx write. ``None``
        means no limit beyond what is ready.
    max_chain_len : int or None
        The device's limit on descriptors per element (see :func:`walk_chain`).

    Attributes
    ----------
    writes : list[DeviceWrite]
        Every device write so far, in order.
    error : QueueError or None
        Set when the queue stopped on bad driver input; the device then needs a reset.
    last_avail_idx, used_idx : int
        The device's 16-bit positions in the available and used rings.
    """

    def __init__(self, mem: GuestMemory, layout: SplitRingLayout, *, in_order: bool = False,
                 event_idx: bool = False, indirect_desc: bool = False,
                 max_batch: int | None = None, max_chain_len: int | None = None):
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be at least 1 or None, not {max_batch}")
        if max_chain_len is not None and max_chain_len < 1:
            raise ValueError(f"max_chain_len must be at least 1 or None, not {max_chain_len}")
        self.ring = SplitRing(mem, layout)
        self.queue_size = check_queue_size(layout.queue_size)
        self.in_order = in_order
        self.event_idx = event_idx
        self.indirect_desc = indirect_desc
        self.max_batch = max_batch
        self.max_chain_len = max_chain_len
        self.reset()

    def reset(self) -> None:
        """Device reset (§2.4): forget every element and start again at index 0."""
        self.last_avail_idx = 0
        self.used_idx = 0
        self.error: QueueError | None = None
        self.writes: list[DeviceWrite] = []
        self._next_seq = 0
        self._in_flight: dict[int, Element] = {}
        self._written_len: dict[int, int] = {}   # completed, not yet in the used ring
        self._ready: list[int] = []              # without IN_ORDER: completion order
        self._next_retire = 0                    # with IN_ORDER: next seq to use
        self._avail_event: int | None = None

    @property
    def in_flight(self) -> int:
        """Elements fetched and not yet returned through the used ring."""
        return len(self._in_flight)

    def element(self, seq: int) -> Element:
        """The in-flight element ``seq`` (``KeyError`` once it is back in the used ring)."""
        return self._in_flight[seq]

    def fetch(self) -> list[Element]:
        """Consume every entry the driver has made available (§2.7.6, §2.7.13).

        Reads ``avail->idx`` once and walks each new head's chain in avail order. Stops at
        the first bad entry (:attr:`error`); after an error it fetches nothing more. With
        EVENT_IDX it then writes ``avail_event = last_avail_idx`` if that changed.
        """
        if self.error is not None:
            return []
        avail_idx = self.ring.avail_idx()
        pending = (avail_idx - self.last_avail_idx) & 0xFFFF
        if pending > self.queue_size:
            self._stop(QueueError(ErrorKind.AVAIL_IDX_JUMP, self.last_avail_idx, None,
                                  f"avail->idx {avail_idx} is {pending} entries past "
                                  f"{self.last_avail_idx}, queue size {self.queue_size}"))
            return []
        fetched = []
        for _ in range(pending):
            idx = self.last_avail_idx
            head = self.ring.avail_entry(idx % self.queue_size)
            try:
                descriptors = walk_chain(self.ring, head, indirect_desc=self.indirect_desc,
                                         max_chain_len=self.max_chain_len)
            except ChainFault as fault:
                self._stop(QueueError(fault.kind, idx, head, fault.detail))
                break
            element = Element(self._next_seq, idx, head, descriptors)
            self._in_flight[element.seq] = element
            self._next_seq += 1
            self.last_avail_idx = (idx + 1) & 0xFFFF
            fetched.append(element)
        if self.event_idx and self.error is None and self._avail_event != self.last_avail_idx:
            self._avail_event = self.last_avail_idx
            self.ring.set_avail_event(self.last_avail_idx)
            self.writes.append(AvailEventWrite(self.last_avail_idx))
        return fetched

    def _stop(self, error: QueueError) -> None:
        logger.info("queue stopped at avail index %d: %s (%s)", error.avail_idx,
                    error.kind.name, error.detail)
        self.error = error

    def complete(self, seq: int, written_len: int) -> None:
        """The backend finished element ``seq``, having written ``written_len`` bytes from the
        start of its device-writable part. Nothing is written until :meth:`flush`."""
        element = self._in_flight.get(seq)
        if element is None:
            raise ValueError(f"element {seq} is not in flight")
        if seq in self._written_len:
            raise ValueError(f"element {seq} completed twice")
        if not 0 <= written_len <= element.writable_len:
            raise ValueError(f"element {seq} cannot have written {written_len} bytes: it has "
                             f"{element.writable_len} device-writable bytes (§2.7.8)")
        self._written_len[seq] = written_len
        if not self.in_order:
            self._ready.append(seq)

    def flush(self) -> list[DeviceWrite]:
        """Write out everything that can be used now, and return the writes made."""
        start = len(self.writes)
        if self.in_order:
            self._flush_in_order()
        else:
            self._flush_unordered()
        return self.writes[start:]

    def _flush_in_order(self) -> None:
        run: list[int] = []
        seq = self._next_retire
        while seq in self._written_len:
            run.append(seq)
            partial = self._written_len[seq] != self._in_flight[seq].writable_len
            if partial or len(run) == self.max_batch:
                self._write_run(run)
                run = []
            seq += 1
        if run:
            self._write_run(run)

    def _write_run(self, run: list[int]) -> None:
        last = self._in_flight[run[-1]]
        self._write_elem(last.head, self._written_len[run[-1]])
        for seq in run:
            del self._in_flight[seq], self._written_len[seq]
        self._next_retire = run[-1] + 1
        self._publish(len(run))

    def _flush_unordered(self) -> None:
        batch = self.max_batch or len(self._ready)
        while self._ready:
            group, self._ready = self._ready[:batch], self._ready[batch:]
            for i, seq in enumerate(group):
                element = self._in_flight.pop(seq)
                self._write_elem(element.head, self._written_len.pop(seq), offset=i)
            self._publish(len(group))

    def _write_elem(self, head: int, written_len: int, offset: int = 0) -> None:
        slot = (self.used_idx + offset) % self.queue_size
        self.ring.set_used_elem(slot, head, written_len)
        self.writes.append(UsedElemWrite(slot, head, written_len))

    def _publish(self, count: int) -> None:
        old = self.used_idx
        self.used_idx = (old + count) & 0xFFFF
        self.ring.set_used_idx(self.used_idx)
        # Read the driver's suppression state after the idx write, as §2.7.7.2 orders it.
        if self.event_idx:
            used_event = self.ring.used_event()
            self.writes.append(UsedIdxWrite(self.used_idx, used_event=used_event))
            notify = vring_need_event(used_event, self.used_idx, old)
        else:
            flags = self.ring.avail_flags()
            self.writes.append(UsedIdxWrite(self.used_idx, avail_flags=flags))
            notify = not flags & _NO_INTERRUPT
        if notify:
            self.writes.append(UsedNotify())


# --- Checker -----------------------------------------------------------------------------------

class UsedRingViolation(AssertionError):
    """An observed device write sequence that a correct device cannot produce."""


@dataclass(frozen=True, slots=True)
class CheckerReport:
    """What the checker saw. ``run_lengths`` holds, for each used element the driver read,
    how many buffers it returned (always 1 without IN_ORDER)."""
    buffers_used: int
    idx_writes: int
    run_lengths: tuple[int, ...]
    notifications: int
    spurious_notifications: int

    @property
    def used_elements(self) -> int:
        return len(self.run_lengths)

    @property
    def mean_run_length(self) -> float:
        return self.buffers_used / len(self.run_lengths) if self.run_lengths else 0.0


@dataclass(slots=True)
class _Buffer:
    seq: int
    head: int
    writable_len: int
    written_len: int | None = None


@dataclass(slots=True)
class _Slot:
    id: int
    len: int
    fresh: bool = True


class UsedRingChecker:
    """Judges an observed stream of device writes to one queue's used ring.

    Feed it, in the order they happened: the buffers the driver made available
    (:meth:`available`, in avail order), the backend's completions (:meth:`completed`), and the
    device's writes (:meth:`observe`, or :meth:`elem_written` / :meth:`idx_written` /
    :meth:`notified` / :meth:`avail_event_written`). Each ``used->idx`` write is read like a
    driver reads it; the first impossible thing raises :class:`UsedRingViolation`.
    :meth:`finish` checks that nothing is left over and returns a :class:`CheckerReport`.

    Parameters
    ----------
    queue_size : int
    in_order, event_idx : bool
        The negotiated features.
    require_completion_order : bool
        Without IN_ORDER, demand that used elements appear in the order the backend completed
        the buffers (the project's contract) rather than in any order (the spec's minimum).
    strict_notifications : bool
        Treat a notification that no rule asked for as a violation (the spec says SHOULD NOT,
        and drivers must tolerate them, §2.7.7); when False they are only counted.
    """

    def __init__(self, queue_size: int, *, in_order: bool, event_idx: bool = False,
                 require_completion_order: bool = True, strict_notifications: bool = True):
        self.queue_size = check_queue_size(queue_size)
        self.in_order = in_order
        self.event_idx = event_idx
        self.require_completion_order = require_completion_order
        self.strict_notifications = strict_notifications
        self.used_idx = 0
        self._buffers: dict[int, _Buffer] = {}         # outstanding buffers (not yet used)
        self._by_head: dict[int, int] = {}             # head -> seq of outstanding buffers
        self._avail_order: deque[int] = deque()        # IN_ORDER: outstanding, avail order
        self._completion_order: deque[int] = deque()   # without IN_ORDER: completion order,
                                                       # used entries dropped lazily
        self._slots: dict[int, _Slot] = {}
        self._next_seq = 0
        self._owed_notification = False
        self._avail_event: int | None = None
        self._buffers_used = 0
        self._idx_writes = 0
        self._run_lengths: list[int] = []
        self._notifications = 0
        self._spurious = 0

    # driver and backend side
    def available(self, head: int, writable_len: int) -> int:
        """The driver made a buffer available; returns its sequence number (avail order)."""
        if head in self._by_head:
            raise ValueError(f"head {head} is already in use by buffer {self._by_head[head]}")
        seq = self._next_seq
        self._next_seq += 1
        self._buffers[seq] = _Buffer(seq, head, writable_len)
        self._by_head[head] = seq
        if self.in_order:
            self._avail_order.append(seq)
        return seq

    def completed(self, seq: int, written_len: int) -> None:
        """The backend finished buffer ``seq`` with ``written_len`` bytes written."""
        buffer = self._buffers.get(seq)
        if buffer is None:
            raise ValueError(f"buffer {seq} is not outstanding")
        if buffer.written_len is not None:
            raise ValueError(f"buffer {seq} completed twice")
        if not 0 <= written_len <= buffer.writable_len:
            raise ValueError(f"buffer {seq} has {buffer.writable_len} writable bytes, "
                             f"cannot have written {written_len}")
        buffer.written_len = written_len
        if not self.in_order:
            self._completion_order.append(seq)

    # device side
    def observe(self, write: DeviceWrite) -> list[int]:
        """Dispatch one device write; returns the buffers a ``used->idx`` write returned."""
        kind = type(write)
        if kind is UsedElemWrite:
            self.elem_written(write.slot, write.id, write.len)
        elif kind is UsedIdxWrite:
            return self.idx_written(write.idx, used_event=write.used_event,
                                    avail_flags=write.avail_flags)
        elif kind is UsedNotify:
            self.notified()
        elif kind is AvailEventWrite:
            self.avail_event_written(write.value)
        else:
            raise TypeError(f"not a device write: {write!r}")
        return []

    def observe_all(self, writes: Iterable[DeviceWrite]) -> list[int]:
        retired = []
        for write in writes:
            retired += self.observe(write)
        return retired

    def elem_written(self, slot: int, id_: int, len_: int) -> None:
        if not 0 <= slot < self.queue_size:
            raise UsedRingViolation(f"used element written at slot {slot}, queue size "
                                    f"{self.queue_size}")
        self._slots[slot] = _Slot(id_, len_)

    def idx_written(self, idx: int, *, used_event: int | None = None,
                    avail_flags: int = 0) -> list[int]:
        """``used->idx = idx`` was written; ``used_event`` / ``avail_flags`` are the values
        the device read to decide on a notification. Returns the buffers returned, in order."""
        old = self.used_idx
        count = (idx - old) & 0xFFFF
        if count == 0:
            raise UsedRingViolation(f"used->idx written as {idx} without advancing")
        if count > len(self._buffers):
            raise UsedRingViolation(
                f"used->idx moved {old} -> {idx} ({count} buffers) but only "
                f"{len(self._buffers)} buffers are outstanding")
        retired: list[int] = []
        position = old
        while position != idx:
            slot = self._slots.get(position % self.queue_size)
            if slot is None or not slot.fresh:
                raise UsedRingViolation(
                    f"used->ring[{position % self.queue_size}] (index {position}) was not "
                    f"written since it was last read; used->idx {old} -> {idx}")
            slot.fresh = False
            remaining = (idx - position) & 0xFFFF
            run = (self._take_run(slot, position, remaining) if self.in_order
                   else self._take_one(slot, position))
            retired += run
            self._run_lengths.append(len(run))
            for i in range(1, len(run)):    # skipped positions: whatever is there is unread
                skipped = self._slots.get((position + i) % self.queue_size)
                if skipped is not None:
                    skipped.fresh = False
            position = (position + len(run)) & 0xFFFF
        self.used_idx = idx
        self._idx_writes += 1
        self._buffers_used += len(retired)
        if self.event_idx:
            if used_event is None:
                raise ValueError("with EVENT_IDX, give the used_event the device read")
            needed = vring_need_event(used_event, idx, old)
        else:
            needed = not avail_flags & _NO_INTERRUPT
        self._owed_notification |= needed
        return retired

    def _check_used(self, buffer: _Buffer, position: int) -> None:
        if buffer.written_len is None:
            raise UsedRingViolation(f"buffer {buffer.seq} (head {buffer.head}) returned at used "
                                    f"index {position} before the backend completed it")

    def _retire(self, seq: int) -> None:
        del self._by_head[self._buffers.pop(seq).head]

    def _take_run(self, slot: _Slot, position: int, remaining: int) -> list[int]:
        # A driver finds the end of the run by looking for the head named by id among the
        # buffers in avail order (§2.7.9).
        seq = self._by_head.get(slot.id)
        if seq is None:
            raise UsedRingViolation(f"used element at index {position} has id {slot.id}, "
                                    f"which is no outstanding buffer's head")
        length = seq - self._avail_order[0] + 1     # outstanding seqs are consecutive
        if length > remaining:
            raise UsedRingViolation(
                f"used element at index {position} (id {slot.id}) returns {length} buffers, "
                f"but used->idx covers only {remaining} more")
        run = [self._avail_order.popleft() for _ in range(length)]
        for i, run_seq in enumerate(run):
            buffer = self._buffers[run_seq]
            self._check_used(buffer, position + i)
            if run_seq != seq and buffer.written_len != buffer.writable_len:
                raise UsedRingViolation(
                    f"buffer {run_seq} (head {buffer.head}) was skipped inside a run ending at "
                    f"id {slot.id}, which tells the driver all {buffer.writable_len} writable "
                    f"bytes were written, but the backend wrote {buffer.written_len} (§2.7.9)")
        last = self._buffers[seq]
        if slot.len != last.written_len:
            raise UsedRingViolation(f"used element at index {position} (id {slot.id}) has len "
                                    f"{slot.len}, the backend wrote {last.written_len}")
        for run_seq in run:
            self._retire(run_seq)
        return run

    def _take_one(self, slot: _Slot, position: int) -> list[int]:
        seq = self._by_head.get(slot.id)
        if seq is None:
            raise UsedRingViolation(f"used element at index {position} has id {slot.id}, "
                                    f"which is no outstanding buffer's head")
        buffer = self._buffers[seq]
        self._check_used(buffer, position)
        if slot.len != buffer.written_len:
            raise UsedRingViolation(f"used element at index {position} (id {slot.id}) has len "
                                    f"{slot.len}, the backend wrote {buffer.written_len}")
        order = self._completion_order
        while order[0] not in self._buffers:
            order.popleft()
        if self.require_completion_order and order[0] != seq:
            first = self._buffers[order[0]]
            raise UsedRingViolation(
                f"used element at index {position} returns buffer {seq} (head {slot.id}), but "
                f"buffer {first.seq} (head {first.head}) completed before it")
        self._retire(seq)
        return [seq]

    def notified(self) -> None:
        if self._owed_notification:
            self._owed_notification = False
            self._notifications += 1
            return
        self._spurious += 1
        if self.strict_notifications:
            raise UsedRingViolation("used buffer notification that no used->idx write asked "
                                    "for (§2.7.7.2)")

    def avail_event_written(self, value: int) -> None:
        if not self.event_idx:
            raise UsedRingViolation("avail_event written without EVENT_IDX")
        self._avail_event = value

    def finish(self, *, all_used: bool = True) -> CheckerReport:
        """Check the end state: no notification owed, every written used element read, and
        (``all_used``) every available buffer used and, with EVENT_IDX, ``avail_event`` asking
        for the next available buffer."""
        if self._owed_notification:
            raise UsedRingViolation(f"used->idx reached {self.used_idx} and the rules of "
                                    f"§2.7.7.2 asked for a notification that was never sent")
        unread = sorted(i for i, slot in self._slots.items() if slot.fresh)
        if unread:
            raise UsedRingViolation(f"used->ring slots {unread} were written but used->idx "
                                    f"never covered them")
        if all_used:
            if self._buffers:
                heads = sorted(b.head for b in self._buffers.values())
                raise UsedRingViolation(f"{len(heads)} buffers never used (heads {heads[:8]}"
                                        f"{'...' if len(heads) > 8 else ''})")
            expected = self._next_seq & 0xFFFF
            if self.event_idx and self._next_seq and self._avail_event != expected:
                raise UsedRingViolation(f"avail_event is {self._avail_event}, should ask for "
                                        f"the next available entry {expected} (§2.7.10)")
        return CheckerReport(self._buffers_used, self._idx_writes, tuple(self._run_lengths),
                             self._notifications, self._spurious)
