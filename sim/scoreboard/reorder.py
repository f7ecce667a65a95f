"""Cycle-by-cycle checker of the ReorderBuffer's ports against the golden model.

The golden model (:mod:`sim.model.reorder`) is untimed. This scoreboard applies the port
contract stated in ``hdl/virtio/reorder_buffer.py`` and ``docs/reorder-buffer.md`` to decide
*when* the model acts:

* an element is drained when the RTL first offers it on ``retire``, and at that moment the
  model has seen every transfer up to two cycles before (a completion needs two cycles to be
  offered, and the run marker ``last`` counts completions accepted at least two cycles before
  the offer);
* ``error`` reflects the completions accepted up to two cycles before;
* ``alloc`` hands out consecutive numbers; in in-order mode ``alloc.valid`` is exactly "not
  busy and fewer than depth in flight" (in bypass mode it may also wait for older seqs);
* a retire offer stays put until taken; ``busy`` lasts ``depth`` cycles after a flush/reset.

Call :meth:`ReorderScoreboard.cycle` once per clock with what was on the ports during that
cycle (inputs as driven, outputs as observed before the clock edge).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sim.model.reorder import ReorderModel, Retired

__all__ = ["ReorderScoreboard", "ScoreboardError", "Stats"]


class ScoreboardError(AssertionError):
    """The RTL broke the port contract or disagreed with the golden model."""


@dataclass
class Stats:
    cycles: int = 0
    allocs: int = 0
    completions: int = 0
    retires: int = 0
    runs: int = 0
    latencies: list[int] = field(default_factory=list)


class ReorderScoreboard:
    """Checks one ReorderBuffer's ports, cycle by cycle, against :class:`ReorderModel`."""

    LAG = 2     # cycles between a transfer and the earliest offer/error it can cause

    def __init__(self, depth: int, *, max_run: int | None = None, bypass: bool = False,
                 busy_after_reset: bool = True) -> None:
        self.model = ReorderModel(depth, max_run=max_run, bypass=bypass)
        self.depth = depth
        self.bypass = bypass
        self.stats = Stats()
        self._events: deque[tuple] = deque([()] * self.LAG)
        self._alloc_next = 0            # real time: next seq alloc must hand out
        self._in_flight = 0             # real time: allocated and not yet retired
        self._busy_left = depth if busy_after_reset else 0
        self._offer: tuple | None = None    # what retire offered last cycle, if not taken
        self._accept_cycle: dict[int, int] = {}  # seq -> cycle its completion was taken

    def cycle(self, *, alloc_valid: int, alloc_seq: int, alloc_ready: int,
              complete_valid: int, complete_seq: int, complete_payload: int,
              retire_valid: int, retire_seq: int, retire_payload: int, retire_last: int,
              retire_ready: int, flush: int, busy: int, error: int, error_seq: int) -> None:
        t = self.stats.cycles
        st = self.stats
        model = self.model
        # Bring the model up to cycle t - LAG.
        for event in self._events.popleft():
            if event[0] == "a":
                model.alloc()
            else:
                model.complete(event[1], event[2])

        # busy: exactly depth cycles after a flush (or reset).
        expect_busy = self._busy_left > 0
        if bool(busy) != expect_busy:
            raise ScoreboardError(f"cycle {t}: busy is {busy}, expected {int(expect_busy)}")
        if self._busy_left:
            self._busy_left -= 1

        # alloc: consecutive numbers within the credit.
        if alloc_valid:
            if alloc_seq != self._alloc_next:
                raise ScoreboardError(f"cycle {t}: alloc offers {alloc_seq}, expected "
                                      f"{self._alloc_next}")
            if busy or self._in_flight >= self.depth:
                raise ScoreboardError(f"cycle {t}: alloc valid with {self._in_flight} in "
                                      f"flight (busy={busy})")
        elif not self.bypass and not busy and self._in_flight < self.depth:
            raise ScoreboardError(f"cycle {t}: alloc not valid with only {self._in_flight} "
                                  f"in flight")

        # retire: an offer stays put until taken; a new offer is the model's next element.
        if retire_valid:
            offer = (retire_seq, retire_payload, retire_last)
            if self._offer is not None:
                if offer != self._offer:
                    raise ScoreboardError(f"cycle {t}: retire changed from {self._offer} to "
                                          f"{offer} before it was taken")
            else:
                expected = model.retire()
                if expected is None:
                    raise ScoreboardError(f"cycle {t}: retire offers seq {retire_seq} but no "
                                          f"element is ready in the model")
                got = Retired(retire_seq, retire_payload, bool(retire_last))
                if got != expected:
                    raise ScoreboardError(f"cycle {t}: retire offers {got}, model expects "
                                          f"{expected}")
                if retire_last:
                    st.runs += 1
                accepted = self._accept_cycle.pop(retire_seq, None)
                if accepted is not None:
                    st.latencies.append(t - accepted)
            self._offer = None if retire_ready else offer
            if retire_ready:
                st.retires += 1
                self._in_flight -= 1
        elif self._offer is not None:
            raise ScoreboardError(f"cycle {t}: retire withdrew {self._offer} before it was "
                                  f"taken")

        # error: sticky, from completions up to t - LAG.
        if bool(error) != (model.error_seq is not None):
            raise ScoreboardError(f"cycle {t}: error is {error}, model says "
                                  f"{model.error_kind} for seq {model.error_seq}")
        if error and error_seq != model.error_seq:
            raise ScoreboardError(f"cycle {t}: error_seq is {error_seq}, model says "
                                  f"{model.error_seq}")

        events = []
        if alloc_valid and alloc_ready:
            events.append(("a",))
            self._alloc_next = (self._alloc_next + 1) % model.seq_modulus
            self._in_flight += 1
            st.allocs += 1
        if complete_valid and not busy:
            events.append(("c", complete_seq, complete_payload))
            self._accept_cycle[complete_seq] = t
            st.completions += 1
        if flush:
            # Everything up to and including this cycle is discarded at this clock edge,
            # so the model forgets it now rather than LAG cycles later.
            model.flush()
            self._events = deque([()] * self.LAG)
            self._alloc_next = 0
            self._in_flight = 0
            self._busy_left = self.depth
            self._offer = None
            self._accept_cycle.clear()
        else:
            self._events.append(tuple(events))
        st.cycles = t + 1

    def finish(self) -> None:
        """Check that nothing is left that should have been retired."""
        if self._offer is not None:
            raise ScoreboardError(f"retire still offers {self._offer} at the end")
