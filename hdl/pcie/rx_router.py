"""Routes received, decoded TLPs to configuration space, BAR completer or the DMA engine."""
from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .spec import CplStatus, TlpFmtType, check_tlp_width, tlp_signature
from .tlp_header import tlp_type_class

__all__ = ["RxRouter", "RxEvents"]

RxEvents = data.StructLayout({
    "poisoned": 1,          # a TLP with EP set arrived (Status: Detected Parity Error)
    "cpl_poisoned": 1,      # ... and it was a completion (Status: Master Data Parity Error)
    "cpl_ur": 1,            # a completion with status UR (Status: Received Master Abort)
    "cpl_ca": 1,            # a completion with status CA (Status: Received Target Abort)
})
"""One-cycle pulses, each at the accepted first beat of the TLP concerned."""


class RxRouter(wiring.Component):
    """Sends each decoded TLP to one of three outputs by its Fmt/Type.

    * ``cfg``: CfgRd0 / CfgWr0 (§2.2.7) to the configuration space;
    * ``cpl``: Cpl, CplD, CplLk, CplDLk (§2.2.9) to the DMA engine;
    * ``req``: everything else (memory, I/O, Type 1 configuration, AtomicOp requests,
      messages, TLPs with a prefix) to the BAR completer, which answers or drops them.

    The header is constant over a TLP, so every beat is routed on its own and no state is
    kept: the component is purely combinational and has nothing to reset. A busy output
    stalls the input (TLPs are handled in arrival order).

    Parameters
    ----------
    width : int
        TLP stream width, 64 or 128.

    Attributes
    ----------
    i : In(tlp_signature(width))
    cfg, req, cpl : Out(tlp_signature(width))
    events : Out(RxEvents)
        Error-logging pulses for the configuration space Status register.
    """

    def __init__(self, *, width: int = 64):
        self.width = check_tlp_width(width)
        super().__init__({
            "i": In(tlp_signature(width)),
            "cfg": Out(tlp_signature(width)),
            "req": Out(tlp_signature(width)),
            "cpl": Out(tlp_signature(width)),
            "events": Out(RxEvents),
        })

    def elaborate(self, platform):
        m = Module()
        hdr = self.i.payload.hdr
        fmt_type = hdr.fmt_type.as_value()
        _, _, completion, _ = tlp_type_class(fmt_type)
        config0 = (hdr.fmt_type == TlpFmtType.CFGRD0) | (hdr.fmt_type == TlpFmtType.CFGWR0)

        for out in (self.cfg, self.req, self.cpl):
            m.d.comb += out.payload.eq(self.i.payload)
        with m.If(config0):
            m.d.comb += [self.cfg.valid.eq(self.i.valid), self.i.ready.eq(self.cfg.ready)]
        with m.Elif(completion):
            m.d.comb += [self.cpl.valid.eq(self.i.valid), self.i.ready.eq(self.cpl.ready)]
        with m.Else():
            m.d.comb += [self.req.valid.eq(self.i.valid), self.i.ready.eq(self.req.ready)]

        start = self.i.valid & self.i.ready & self.i.payload.first
        m.d.comb += [
            self.events.poisoned.eq(start & hdr.ep),
            self.events.cpl_poisoned.eq(start & completion & hdr.ep),
            self.events.cpl_ur.eq(start & completion & (hdr.status == CplStatus.UR)),
            self.events.cpl_ca.eq(start & completion & (hdr.status == CplStatus.CA)),
        ]
        return m
