"""Round-robin merge of decoded TLP streams onto one transmit stream."""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .spec import check_tlp_width, tlp_signature

__all__ = ["TlpArbiter"]


class TlpArbiter(wiring.Component):
    """Merges ``n`` decoded TLP streams, whole TLPs at a time, round robin.

    Promises:

    * never interleaves: once a beat of a TLP from input ``k`` is offered on ``o``, only
      input ``k`` is served until its beat with ``last`` is accepted (an offered beat is
      never withdrawn or replaced, as stream rules require);
    * fair: when a TLP ends, the inputs after its source (in index order, wrapping) have
      priority, so a waiting input is served after at most ``n - 1`` other TLPs;
    * no buffering and no added latency: a beat passes combinationally, ``ready`` goes back
      only to the input being served, so back-pressure on ``o`` stops everything and the
      order in which TLPs are accepted on the inputs is the order they leave on ``o``. (A
      source may rely on this: a TLP whose last beat was accepted leaves before any TLP
      accepted later, from any input.)

    Reset: idle, input 0 has the highest priority.

    Parameters
    ----------
    n : int
        Number of inputs (at least 1).
    width : int
        TLP stream width, 64 or 128.

    Attributes
    ----------
    i : In(tlp_signature(width)).array(n)
    o : Out(tlp_signature(width))
    """

    def __init__(self, *, n: int, width: int = 64):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"arbiter needs at least one input, not {n!r}")
        self.n = n
        self.width = check_tlp_width(width)
        super().__init__({
            "i": In(tlp_signature(width)).array(n),
            "o": Out(tlp_signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        locked = Signal()
        owner = Signal(range(n))
        prev = Signal(range(n), init=n - 1)     # source of the last finished TLP
        pick = Signal(range(n))
        sel = Signal(range(n))

        # Rotating priority: scan from prev + 1, wrapping; the first valid input wins.
        with m.Switch(prev):
            for p in range(n):
                with m.Case(p):
                    order = [(p + 1 + k) % n for k in range(n)]
                    for idx in reversed(order):
                        with m.If(self.i[idx].valid):
                            m.d.comb += pick.eq(idx)
        m.d.comb += sel.eq(pick)
        with m.If(locked):
            m.d.comb += sel.eq(owner)

        with m.Switch(sel):
            for k in range(n):
                with m.Case(k):
                    m.d.comb += [
                        self.o.valid.eq(self.i[k].valid),
                        self.o.payload.eq(self.i[k].payload),
                        self.i[k].ready.eq(self.o.ready),
                    ]

        # The choice is held from the first cycle a beat is offered until the TLP's last beat
        # is taken: a stream's payload must not change while it waits (a packetizer behind
        # the arbiter offers several header beats for one input beat it has not taken yet).
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += [locked.eq(0), prev.eq(sel)]
        with m.Elif(self.o.valid):
            m.d.sync += [locked.eq(1), owner.eq(sel)]
        return m
