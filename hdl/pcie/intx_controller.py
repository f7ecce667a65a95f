"""Legacy INTx emulation: Assert_INTA / Deassert_INTA messages (PCIe Base §2.2.8.1)."""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .spec import MsgCode, TlpFmtType, check_tlp_width, tlp_signature

__all__ = ["IntxController"]


class IntxController(wiring.Component):
    """Turns an interrupt level into INTA virtual-wire messages.

    The virtual wire is asserted while ``level`` is high, ``interrupt_disable`` (Command
    bit 10) is clear and MSI-X is not enabled (a function with MSI-X enabled must not use
    INTx, §6.1.4.3 / §7.7.2.2). Every change of the wire sends one message: Assert_INTA
    (code 20h) or Deassert_INTA (24h), Msg with routing 100b "local" (§2.2.8.1), 4 DW header,
    no payload, requester ID from the configuration space, tag 0, TC0. If the level changes
    faster than the messages can leave, intermediate states are skipped but the last message
    sent always matches the wire's final state, and asserts and deasserts alternate.

    ``interrupt_status`` is the Status register's Interrupt Status bit (§7.5.1.1.4): an INTx
    interrupt is pending inside the function. It follows ``level`` whatever Interrupt
    Disable says, and reads 0 while MSI-X is enabled.

    Reset: the wire counts as deasserted and nothing is sent; if ``level`` is high after reset
    an Assert_INTA goes out (a hard-IP or link reset has deasserted the wire at the root).

    Attributes
    ----------
    level : In(1)
        The function's interrupt condition (for virtio: ISR status non-zero).
    msix_enable, interrupt_disable : In(1)
    requester_id : In(16)
    tx : Out(tlp_signature(width))
    interrupt_status : Out(1)
    """

    def __init__(self, *, width: int = 64):
        self.width = check_tlp_width(width)
        super().__init__({
            "level": In(1),
            "msix_enable": In(1),
            "interrupt_disable": In(1),
            "requester_id": In(16),
            "tx": Out(tlp_signature(width)),
            "interrupt_status": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        want = Signal()
        sent = Signal()         # wire state as the root complex last heard it
        sending = Signal()      # a message for `target` is on tx
        target = Signal()
        requester_id = Signal(16)
        m.d.comb += [
            want.eq(self.level & ~self.interrupt_disable & ~self.msix_enable),
            self.interrupt_status.eq(self.level & ~self.msix_enable),
        ]
        with m.If(~sending & (want != sent)):
            m.d.sync += [sending.eq(1), target.eq(want), requester_id.eq(self.requester_id)]

        hdr = self.tx.payload.hdr
        m.d.comb += [
            self.tx.valid.eq(sending),
            self.tx.payload.first.eq(1),
            self.tx.payload.last.eq(1),
            hdr.fmt_type.eq(TlpFmtType.MSG_LOCAL),
            hdr.requester_id.eq(requester_id),
            hdr.msg_code.eq(MsgCode.DEASSERT_INTA),
        ]
        with m.If(target):
            m.d.comb += hdr.msg_code.eq(MsgCode.ASSERT_INTA)
        with m.If(self.tx.valid & self.tx.ready):
            m.d.sync += [sending.eq(0), sent.eq(target)]
        return m
