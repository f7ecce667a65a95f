"""Round-robin choice among request bits, as a combinational helper for the engine's blocks,
and the command grant the engine's DMA arbiters share."""
from amaranth.hdl import Cat, Module, Mux, Signal, Value

__all__ = ["round_robin", "grant_commands", "check_arbiter_params"]


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


def check_arbiter_params(num_clients, max_outstanding) -> None:
    """The parameter rules of the DMA arbiters: clients >= 1, outstanding a power of two >= 2."""
    if not isinstance(num_clients, int) or num_clients < 1:
        raise ValueError(f"num_clients must be a positive integer, not {num_clients!r}")
    if max_outstanding < 2 or max_outstanding & (max_outstanding - 1):
        raise ValueError(f"max_outstanding must be a power of two of at least 2, "
                         f"not {max_outstanding}")


def grant_commands(m: Module, clients, bus, room: Value) -> Signal:
    """Pass one client's ``cmd`` stream to ``bus.cmd``, clients taken round robin, while
    ``room`` (the arbiter can track one more command). A command offered on the bus keeps
    its client until it is taken, so the bus never sees an offer withdrawn or changed.
    Returns the granted client's index (valid in the cycle the command is taken).
    """
    n = len(clients)
    last = Signal(range(max(n, 2)))
    held = Signal()
    _, pick = round_robin(m, Cat(c.cmd.valid for c in clients), last)
    chosen = Signal(range(max(n, 2)))
    m.d.comb += chosen.eq(Mux(held, last, pick))
    for i, client in enumerate(clients):
        with m.If(chosen == i):
            m.d.comb += [
                bus.cmd.valid.eq(client.cmd.valid & room),
                bus.cmd.payload.eq(client.cmd.payload),
                client.cmd.ready.eq(bus.cmd.ready & room),
            ]
    m.d.sync += [
        last.eq(chosen),
        held.eq(bus.cmd.valid & ~bus.cmd.ready),
    ]
    return chosen
