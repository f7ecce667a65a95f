"""The request side of a configuration space: CfgRd0/CfgWr0 in, completions out."""
from __future__ import annotations

from collections.abc import Iterable

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .register_bus import RegisterBus
from .spec import CplStatus, TlpFmtType, TlpHeader, check_tlp_width, tlp_signature

__all__ = ["ConfigTarget"]

_FORWARD_DWS = 64       # cfg_ext reaches the legacy space (0x00..0xFF), 64 DWs


class ConfigTarget(wiring.Component):
    """Takes configuration requests one at a time and completes each (PCIe Base §2.2.9).

    What a DW holds is the owner's business: the owner
    (:class:`~hdl.pcie.config_space.ConfigSpace`,
    :class:`~hdl.pcie.user_config_space.UserConfigSpace`) gives the value of the DW
    ``request.cfg_reg`` on ``read_data`` and applies ``local_write``. This component
    does the transaction: it latches a request (a request with more than one data DW has
    the rest dropped), and for function 0

    * a DW listed in ``forwarded`` with a non-zero First DW Byte Enable goes out on
      ``cfg_ext`` (read data from there), every other DW is the owner's;
    * a CfgWr0 pulses ``accepted_write`` (whatever the DW) and, for the owner's DWs,
      ``local_write``;

    then sends the completion: CplD with the whole DW for a read, Cpl for a write, status
    SC, Byte Count 4, requester ID / tag / TC / attributes from the request and the
    completer ID from ``completer_id``. A request to another function number (a single
    function device) gets a Cpl with Unsupported Request and pulses ``unsupported``.

    Reset: idle, ready for a request; a completion being offered on ``tx`` is dropped.

    Parameters
    ----------
    width : int
        TLP stream width, 64 or 128.
    forwarded : iterable of int
        DW indices (0..63) served on ``cfg_ext``.

    Attributes
    ----------
    rx : In(tlp_signature(width))
        CfgRd0 / CfgWr0 requests only.
    tx : Out(tlp_signature(width))
        Their completions.
    cfg_ext : Out(RegisterBus.Signature(addr_width=6))
        Accesses to forwarded DWs; ``addr`` is the configuration DW index.
    request : Out(TlpHeader)
        The request being served (valid from the cycle after it was taken until the next).
    write_data : Out(32)
        Its data DW.
    read_data : In(32)
        The owner's value of DW ``request.cfg_reg``, sampled one cycle after the request
        was taken.
    local_write : Out(1)
        Write ``write_data`` under ``request.first_be`` to the owner's DW ``request.cfg_reg``.
    accepted_write : Out(1)
        A CfgWr0 to function 0 is being executed (for Bus / Device Number capture, §2.2.6.2).
    unsupported : Out(1)
        A request to a function number that does not exist was answered UR.
    completer_id : In(16)
        Completer ID of the completions.
    """

    def __init__(self, *, width: int = 64, forwarded: Iterable[int] = ()):
        self.width = check_tlp_width(width)
        self.forwarded = sorted(set(forwarded))
        for dw in self.forwarded:
            if not isinstance(dw, int) or not 0 <= dw < _FORWARD_DWS:
                raise ValueError(f"forwarded DW {dw!r} must be a DW index 0..63 "
                                 f"(the legacy configuration space)")
        super().__init__({
            "rx": In(tlp_signature(width)),
            "tx": Out(tlp_signature(width)),
            "cfg_ext": Out(RegisterBus.Signature(addr_width=6)),
            "request": Out(TlpHeader),
            "write_data": Out(32),
            "read_data": In(32),
            "local_write": Out(1),
            "accepted_write": Out(1),
            "unsupported": Out(1),
            "completer_id": In(16),
        })

    def elaborate(self, platform):
        m = Module()
        rx, tx, ext = self.rx, self.tx, self.cfg_ext
        req = self.request
        rdata = Signal(32)
        status = Signal(CplStatus)
        is_write = req.fmt_type == TlpFmtType.CFGWR0
        reg = req.cfg_reg
        be = req.first_be

        forwarded = Signal()
        with m.Switch(reg):
            for dw_index in self.forwarded:
                with m.Case(dw_index):
                    m.d.comb += forwarded.eq(1)
        m.d.comb += [
            ext.addr.eq(reg[0:6]),
            ext.write.eq(is_write),
            ext.be.eq(be),
            ext.w_data.eq(self.write_data),
        ]

        with m.FSM(name="state"):
            with m.State("IDLE"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [req.eq(rx.payload.hdr),
                                 self.write_data.eq(rx.payload.data[0:32])]
                    with m.If(rx.payload.last):
                        m.next = "EXEC"
                    with m.Else():
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                # A configuration request carries at most one DW; anything more is dropped.
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid & rx.payload.last):
                    m.next = "EXEC"
            with m.State("EXEC"):
                m.d.sync += [status.eq(CplStatus.SC), rdata.eq(self.read_data)]
                with m.If(req.cfg_function != 0):
                    m.d.sync += status.eq(CplStatus.UR)
                    m.d.comb += self.unsupported.eq(1)
                    m.next = "SEND"
                with m.Else():
                    m.d.comb += self.accepted_write.eq(is_write)
                    with m.If(forwarded & (be != 0)):
                        m.next = "FORWARD"
                    with m.Else():
                        m.d.comb += self.local_write.eq(is_write)
                        m.next = "SEND"
            with m.State("FORWARD"):
                m.d.comb += ext.valid.eq(1)
                with m.If(ext.ack):
                    with m.If(~is_write):
                        m.d.sync += rdata.eq(ext.r_data)
                    m.next = "SEND"
            with m.State("SEND"):
                th = tx.payload.hdr
                ok_read = ~is_write & (status == CplStatus.SC)
                m.d.comb += [
                    tx.valid.eq(1),
                    th.fmt_type.eq(Mux(ok_read, TlpFmtType.CPLD, TlpFmtType.CPL)),
                    th.length.eq(ok_read),
                    th.status.eq(status),
                    th.requester_id.eq(req.requester_id),
                    th.tag.eq(req.tag),
                    th.tc.eq(req.tc),
                    th.attr.eq(req.attr),
                    th.completer_id.eq(self.completer_id),
                    th.byte_count.eq(4),
                    tx.payload.data.eq(rdata),
                    tx.payload.keep.eq(ok_read),
                    tx.payload.first.eq(1),
                    tx.payload.last.eq(1),
                ]
                with m.If(tx.ready):
                    m.next = "IDLE"
        return m
