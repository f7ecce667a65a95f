"""Shares one DMA write channel between several clients."""
from amaranth.hdl import Module
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.dma_port import WriteChannelSignature
from hdl.virtio.round_robin import check_arbiter_params, grant_commands

__all__ = ["DmaWriteArbiter"]


class DmaWriteArbiter(wiring.Component):
    """Round-robin arbiter of ``num_clients`` DMA write channels onto one (``bus``).

    Commands are granted round robin. The write channel takes data in command order and
    answers ``done`` in command order, so two FIFOs of granted client numbers route each
    client's data beats (up to ``last``) to the bus and each ``done`` back to its client.
    A client may offer its next command before it has sent the data of the previous one.

    Reset: nothing outstanding; reset it only while ``idle``.

    Parameters
    ----------
    num_clients : int
        Clients, at least 1.
    width : int
        Data width of the channels in bits.
    max_outstanding : int
        Most commands granted whose ``done`` has not come back; a power of two from 2.

    Attributes
    ----------
    clients : In(WriteChannelSignature(width)).array(num_clients)
        The clients' channels. A client keeps a command's ``valid`` up until it is taken,
        then sends its data without waiting for anything but ``ready``, and always takes
        ``done``.
    bus : Out(WriteChannelSignature(width))
        Towards the DMA engine. A command offered here stays offered (unchanged) until taken.
    idle : Out(1)
        Every command granted has had its ``done``.
    """

    def __init__(self, *, num_clients: int, width: int = 64, max_outstanding: int = 8):
        check_arbiter_params(num_clients, max_outstanding)
        self.num_clients = num_clients
        self.width = width
        self.max_outstanding = max_outstanding
        super().__init__({
            "clients": In(WriteChannelSignature(width)).array(num_clients),
            "bus": Out(WriteChannelSignature(width)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.num_clients
        owner_bits = max(1, (n - 1).bit_length())
        m.submodules.data_owners = data_owners = fifo.SyncFIFOBuffered(
            width=owner_bits, depth=self.max_outstanding)
        m.submodules.done_owners = done_owners = fifo.SyncFIFOBuffered(
            width=owner_bits, depth=self.max_outstanding)
        room = data_owners.w_rdy & done_owners.w_rdy

        chosen = grant_commands(m, self.clients, self.bus, room)
        cmd_taken = self.bus.cmd.valid & self.bus.cmd.ready
        m.d.comb += [
            data_owners.w_en.eq(cmd_taken),
            data_owners.w_data.eq(chosen),
            done_owners.w_en.eq(cmd_taken),
            done_owners.w_data.eq(chosen),
        ]

        for i, client in enumerate(self.clients):
            m.d.comb += client.done.payload.eq(self.bus.done.payload)
            with m.If(data_owners.r_rdy & (data_owners.r_data == i)):
                m.d.comb += [
                    self.bus.data.valid.eq(client.data.valid),
                    self.bus.data.payload.eq(client.data.payload),
                    client.data.ready.eq(self.bus.data.ready),
                ]
            with m.If(done_owners.r_data == i):
                m.d.comb += [
                    client.done.valid.eq(self.bus.done.valid & done_owners.r_rdy),
                    self.bus.done.ready.eq(client.done.ready & done_owners.r_rdy),
                ]
        m.d.comb += [
            data_owners.r_en.eq(self.bus.data.valid & self.bus.data.ready
                                & self.bus.data.payload.last),
            done_owners.r_en.eq(self.bus.done.valid & self.bus.done.ready),
            # level, not r_rdy: a buffered FIFO shows a new entry on r_rdy a cycle late.
            self.idle.eq(done_owners.level == 0),
        ]
        return m
