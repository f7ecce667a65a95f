"""Several register bus masters sharing one register client."""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.register_bus import RegisterBus

__all__ = ["RegisterBusArbiter"]


class RegisterBusArbiter(wiring.Component):
    """Lets ``masters`` register bus masters reach one client, one access at a time.

    The transport's windows are reached both by the BAR completer (memory requests) and by
    the ``VIRTIO_PCI_CAP_PCI_CFG`` window (configuration requests, virtio 1.2 §4.1.4.9).
    An access is passed through combinationally in the cycle it is granted, so a zero-wait
    client still serves one DW per clock; if the client does not acknowledge at once, the
    grant is held until it does (a master keeps its request stable until ``ack``, see
    :mod:`hdl.pcie.register_bus`). Masters waiting at the same time are served round robin,
    so none waits for more than ``masters - 1`` other accesses.

    Reset: no grant is held; the next access goes to the lowest waiting master after the
    last one served (master 0 after reset).

    Parameters
    ----------
    addr_width : int
        Address width of the buses.
    masters : int
        Number of masters, at least 2.

    Attributes
    ----------
    inputs : In(RegisterBus.Signature(addr_width)).array(masters)
        The masters' buses (this component is their client).
    client : Out(RegisterBus.Signature(addr_width))
        Towards the shared client.
    """

    def __init__(self, *, addr_width: int, masters: int = 2):
        if not isinstance(masters, int) or masters < 2:
            raise ValueError(f"masters must be an integer of at least 2, not {masters!r}")
        self.addr_width = addr_width
        self.masters = masters
        super().__init__({
            "inputs": In(RegisterBus.Signature(addr_width=addr_width)).array(masters),
            "client": Out(RegisterBus.Signature(addr_width=addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.masters
        locked = Signal()
        owner = Signal(range(n))
        last = Signal(range(n), init=n - 1)     # the master served last

        # Round robin: the first waiting master after ``last``.
        pick = Signal(range(n))
        for offset in reversed(range(1, n + 1)):
            for k in range(n):
                with m.If((last == k) & self.inputs[(k + offset) % n].valid):
                    m.d.comb += pick.eq((k + offset) % n)
        grant = Signal(range(n))
        with m.If(locked):
            m.d.comb += grant.eq(owner)
        with m.Else():
            m.d.comb += grant.eq(pick)

        client = self.client
        for k, bus in enumerate(self.inputs):
            with m.If(grant == k):
                m.d.comb += [
                    client.valid.eq(bus.valid),
                    client.addr.eq(bus.addr),
                    client.write.eq(bus.write),
                    client.be.eq(bus.be),
                    client.w_data.eq(bus.w_data),
                    bus.ack.eq(client.ack),
                ]
            m.d.comb += bus.r_data.eq(client.r_data)

        with m.If(client.valid):
            with m.If(client.ack):
                m.d.sync += [locked.eq(0), last.eq(grant)]
            with m.Else():
                m.d.sync += [locked.eq(1), owner.eq(grant)]
        return m
