"""Golden model of the in-order completion reorder buffer.

``VIRTIO_F_IN_ORDER`` (feature bit 35, virtio 1.2 §6) lets a device that uses buffers in the
order they were made available return a batch of them as a single used-ring element, the id of
the batch's last buffer, plus one ``used->idx`` update (virtio 1.2 §2.7.9, "In-order use of
descriptors"; the used ring is §2.7.8). A device whose backend finishes requests out of order
has to restore that order first. The software design this models (QEMU's in-order virtqueue
support) does it like this:

* every element gets a sequence number when it is popped from the available ring;
* a completion that arrives early is stashed in a dictionary keyed by that number;
* the stash is drained while the next expected number is present.

On top of that the hardware adds what this model also states: a credit of ``depth`` elements
in flight (allocated and not yet retired), sequence numbers counted modulo ``2 * depth``,
errors for completions of numbers that are not in flight or were already completed, a bypass
mode for when ``VIRTIO_F_IN_ORDER`` was not negotiated (retire in arrival order), a flush for
device reset, and a run marker on every retired element.

The model is untimed and independent of the RTL: the caller decides when elements are
drained. A testbench that compares it with the RTL calls :meth:`ReorderModel.retire` at the
moment the RTL's documented rule says the element was drained.
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["ReorderModel", "Retired", "CompletionError", "CreditError",
           "MIN_DEPTH", "MAX_DEPTH", "MAX_RUN", "check_params"]

MIN_DEPTH = 2
MAX_DEPTH = 4096
MAX_RUN = 32768     # the largest Queue Size (virtio 1.2 §2.7): no batch can be longer


class CompletionError(enum.Enum):
    """Why a completion was refused."""
    NOT_IN_FLIGHT = "not in flight"     # never allocated, or already retired
    DUPLICATE = "duplicate"             # completed already and not yet retired


class CreditError(RuntimeError):
    """An allocation was attempted while ``depth`` elements were in flight."""


@dataclass(frozen=True)
class Retired:
    """One retired element: its sequence number, its payload, and the run marker.

    ``last`` is False when the next element (in retire order) was already retire-ready when
    this one was drained and the run has not reached ``max_run`` elements.
    """
    seq: int
    payload: Any
    last: bool


def check_params(depth: int, max_run: int | None) -> int:
    """Check the buffer parameters; return the effective ``max_run``."""
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise TypeError(f"depth must be an integer, not {depth!r}")
    if depth < MIN_DEPTH or depth > MAX_DEPTH or depth & (depth - 1):
        raise ValueError(f"depth must be a power of two from {MIN_DEPTH} to {MAX_DEPTH}, "
                         f"not {depth}")
    if max_run is None:
        return depth
    if not isinstance(max_run, int) or isinstance(max_run, bool):
        raise TypeError(f"max_run must be an integer or None, not {max_run!r}")
    if max_run < 1 or max_run > MAX_RUN:
        raise ValueError(f"max_run must be from 1 to {MAX_RUN}, not {max_run}")
    return max_run


class ReorderModel:
    """The reorder buffer as a dictionary keyed by sequence number.

    Parameters
    ----------
    depth : int
        Credit: the most elements in flight (allocated and not yet retired). A power of two
        from 2 to 4096. Sequence numbers count modulo ``2 * depth``.
    max_run : int or None
        Longest run of the run marker (default ``depth``).
    bypass : bool
        ``VIRTIO_F_IN_ORDER`` not negotiated: completions retire in arrival order. A seq
        then also holds the credit until it and every older seq have completed (its storage
        slot, ``seq mod depth``, is reused ``depth`` numbers later).

    Attributes
    ----------
    error_seq : int or None
        The seq of the first refused completion since the last flush (sticky).
    error_kind : CompletionError or None
        Why that completion was refused.
    """

    def __init__(self, depth: int = 256, *, max_run: int | None = None,
                 bypass: bool = False) -> None:
        self.max_run = check_params(depth, max_run)
        self.depth = depth
        self.seq_width = depth.bit_length()           # log2(depth) + 1
        self.seq_modulus = 2 * depth
        self.bypass = bool(bypass)
        self.flush()

    # --- state ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Device reset: forget everything in flight, restart numbering, clear the error."""
        self._next_seq = 0
        self._expected = 0                            # in-order: the next seq to retire
        self._pending: dict[int, None] = {}           # allocated, not completed; in seq order
        self._stash: dict[int, Any] = {}              # in-order: completed, not retired
        self._arrivals: deque[tuple[int, Any]] = deque()  # bypass: completed, not retired
        self._in_flight = 0
        self._run = 0
        self.error_seq: int | None = None
        self.error_kind: CompletionError | None = None

    @property
    def in_flight(self) -> int:
        """Elements allocated and not yet retired."""
        return self._in_flight

    @property
    def next_seq(self) -> int:
        """The seq the next allocation will hand out."""
        return self._next_seq

    def can_alloc(self) -> bool:
        """Whether the credit allows another allocation."""
        if self._in_flight >= self.depth:
            return False
        if self.bypass and self._pending:
            oldest = next(iter(self._pending))
            return (self._next_seq - oldest) % self.seq_modulus < self.depth
        return True

    # --- operations -------------------------------------------------------------------------

    def alloc(self) -> int:
        """Pop an element: give it the next sequence number."""
        if not self.can_alloc():
            raise CreditError(f"no credit: {self._in_flight} of {self.depth} in flight")
        seq = self._next_seq
        self._next_seq = (seq + 1) % self.seq_modulus
        self._pending[seq] = None
        self._in_flight += 1
        return seq

    def complete(self, seq: int, payload: Any) -> bool:
        """Offer a completion. Returns False (and records the first error) if it is refused."""
        if seq in self._pending:
            del self._pending[seq]
            if self.bypass:
                self._arrivals.append((seq, payload))
            else:
                self._stash[seq] = payload
            return True
        if seq in self._stash or any(s == seq for s, _ in self._arrivals):
            kind = CompletionError.DUPLICATE
        else:
            kind = CompletionError.NOT_IN_FLIGHT
        if self.error_seq is None:
            self.error_seq = seq
            self.error_kind = kind
        return False

    def ready(self) -> bool:
        """Whether the next element in retire order has completed."""
        if self.bypass:
            return bool(self._arrivals)
        return self._expected in self._stash

    def retire(self) -> Retired | None:
        """Drain the next element if it is ready, else return None."""
        if self.bypass:
            if not self._arrivals:
                return None
            seq, payload = self._arrivals.popleft()
        else:
            seq = self._expected
            if seq not in self._stash:
                return None
            payload = self._stash.pop(seq)
            self._expected = (seq + 1) % self.seq_modulus
        self._in_flight -= 1
        self._run += 1
        last = not (self.ready() and self._run < self.max_run)
        if last:
            self._run = 0
        return Retired(seq, payload, last)

    def drain(self) -> list[Retired]:
        """Retire while the next expected element is present (the software drain loop)."""
        out = []
        while (item := self.retire()) is not None:
            out.append(item)
        return out
