"""Round-robin choice among request bits, as a combinational helper for the engine's blocks."""
from amaranth.hdl import Module, Signal, Value

__all__ = ["round_robin"]


def round_robin(m: Module, requests: Value, last: Value, *, name: str = "rr") -> tuple:
    """The first requester after ``last`` (wrapping), for fair service of queues or clients.

    ``requests`` is a bit vector (bit i: requester i wants service), ``last`` the requester
    served last. Returns ``(any, pick)``: whether any bit is set, and the index of the first
    set bit found going ``last + 1, last + 2, ...``, which is ``last`` itself only when it is
    the only one asking. Pure logic, added to ``m.d.comb``.
    """
    n = len(requests)
    pick = Signal(range(max(n, 2)), name=f"{name}_pick")
    with m.Switch(last):
        for base in range(n):
            with m.Case(base):
                # Later assignments win: walk the order backwards so the nearest wins.
                for offset in reversed(range(1, n + 1)):
                    index = (base + offset) % n
                    with m.If(requests[index]):
                        m.d.comb += pick.eq(index)
    return requests.any(), pick
