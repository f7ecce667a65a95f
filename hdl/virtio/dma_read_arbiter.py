"""Shares one DMA read channel between several clients, and drains it on a device reset."""
from amaranth.hdl import Module
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import ReadChannelSignature
from hdl.virtio.round_robin import check_arbiter_params, grant_commands

__all__ = ["DmaReadArbiter"]


class DmaReadArbiter(wiring.Component):
    """Round-robin arbiter of ``num_clients`` DMA read channels onto one (``bus``).

    Commands are granted round robin; the read channel returns data in command order, so a
    FIFO of the granted client numbers routes each command's beats (up to its ``last``) back
    to the client that issued it. Every client thus sees its own commands answered in order.

    Reset: nothing outstanding; reset it only while ``idle`` (drain first).

    Parameters
    ----------
    num_clients : int
        Clients, at least 1 (with one client this is only the reset drain).
    width : int
        Data width of the channels in bits.
    max_outstanding : int
        Most commands granted whose last data beat has not arrived; a power of two from 2.

    Attributes
    ----------
    clients : In(ReadChannelSignature(width)).array(num_clients)
        The clients' channels. A client keeps a command's ``valid`` up until it is taken and,
        outside ``drain``, accepts the data of its commands eventually.
    bus : Out(ReadChannelSignature(width))
        Towards the DMA engine. A command offered here stays offered (unchanged) until taken.
    drain : In(1)
        Device reset in progress: no data is passed to clients any more, and the beats of
        every command granted are taken and dropped. Commands still offered by a client are
        granted and drained too, so clients stop offering new ones meanwhile.
    idle : Out(1)
        No command is outstanding: every beat of every granted command has been taken.
    """

    def __init__(self, *, num_clients: int, width: int = 64, max_outstanding: int = 8):
        check_arbiter_params(num_clients, max_outstanding)
        self.num_clients = num_clients
        self.width = width
        self.max_outstanding = max_outstanding
        super().__init__({
            "clients": In(ReadChannelSignature(width)).array(num_clients),
            "bus": Out(ReadChannelSignature(width)),
            "drain": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.num_clients

        m.submodules.owners = owners = fifo.SyncFIFOBuffered(
            width=max(1, (n - 1).bit_length()), depth=self.max_outstanding)

        # Command grant: a command offered on the bus keeps its client until it is taken.
        chosen = grant_commands(m, self.clients, self.bus, owners.w_rdy)
        cmd_taken = self.bus.cmd.valid & self.bus.cmd.ready
        m.d.comb += [
            owners.w_en.eq(cmd_taken),
            owners.w_data.eq(chosen),
        ]

        # Data routing: beats belong to the oldest outstanding command.
        for i, client in enumerate(self.clients):
            m.d.comb += client.data.payload.eq(self.bus.data.payload)
            with m.If((owners.r_data == i) & ~self.drain):
                m.d.comb += [
                    client.data.valid.eq(self.bus.data.valid & owners.r_rdy),
                    self.bus.data.ready.eq(client.data.ready & owners.r_rdy),
                ]
        with m.If(self.drain):
            m.d.comb += self.bus.data.ready.eq(owners.r_rdy)
        data_taken = self.bus.data.valid & self.bus.data.ready
        m.d.comb += [
            owners.r_en.eq(data_taken & self.bus.data.payload.last),
            # level, not r_rdy: a buffered FIFO shows a new entry on r_rdy a cycle late.
            self.idle.eq(owners.level == 0),
        ]
        return m
