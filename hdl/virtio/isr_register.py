"""The ISR status byte (virtio 1.2 §4.1.4.5): read to clear, drives INTx."""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.register_bus import RegisterBus

__all__ = ["IsrRegister"]


class IsrRegister(wiring.Component):
    """The ISR status byte at offset 0 of the ISR window.

    Bit 0 (Queue Interrupt) and bit 1 (Device Configuration Interrupt) are set by ``set``;
    a read of byte 0 returns the byte and clears it (§4.1.4.5.1: "the device MUST reset ISR
    status to 0 on driver read"). A bit set in the same cycle as such a read is kept for the
    next read, never lost. Every other byte of the window reads 0; writes have no effect.
    ``pending`` (the byte is non-zero) is the level the function turns into INTx while MSI-X
    is off (§4.1.4.5.1).

    Reset: ``rst`` or ``clear`` (the device reset) empties the byte.

    Parameters
    ----------
    addr_width : int
        Width of the window's DW address.

    Attributes
    ----------
    bus : In(RegisterBus.Signature(addr_width))
    set : In(2)
        Bits to set, pulses: bit 0 ``IsrStatus.QUEUE``, bit 1 ``IsrStatus.DEVICE_CONFIG``.
    clear : In(1)
    pending : Out(1)
    """

    def __init__(self, *, addr_width: int = 10):
        super().__init__({
            "bus": In(RegisterBus.Signature(addr_width=addr_width)),
            "set": In(2),
            "clear": In(1),
            "pending": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        isr = Signal(2)
        reads_isr = (bus.addr == 0) & bus.be[0] & ~bus.write
        m.d.comb += [
            bus.ack.eq(bus.valid),
            bus.r_data.eq(0),
            self.pending.eq(isr.any()),
        ]
        with m.If(reads_isr):
            m.d.comb += bus.r_data[:2].eq(isr)
        taken = Signal(2)
        with m.If(bus.valid & reads_isr):
            m.d.comb += taken.eq(isr)
        m.d.sync += isr.eq((isr & ~taken) | self.set)
        with m.If(self.clear):
            m.d.sync += isr.eq(0)
        return m
