"""Round-robin arbiter of the DMA engine's outgoing TLPs, gated by flow control credits."""
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.spec import TlpFmtType, tlp_signature
from hdl.pcie.dma.layouts import FC_DATA_BITS, FC_HDR_BITS, FcCreditLimit

__all__ = ["RequestArbiter", "credit_fits"]


def credit_fits(limit, consumed, required, bits: int):
    """The transmitter gating function of PCIe Base §2.6.1.2.

    A TLP needing ``required`` credits may be sent when
    ``(CREDIT_LIMIT - (CREDITS_CONSUMED + required)) mod 2**bits <= 2**bits / 2``.
    """
    return ((limit - consumed - required)[:bits]) <= (1 << (bits - 1))


class RequestArbiter(wiring.Component):
    """Merges whole TLPs from several sources onto one decoded TLP stream.

    A TLP starts only when Bus Master Enable is set, flow control is initialised and the
    link partner has room for it: one Posted header and ``ceil(Length / 4)`` Posted data
    credits for a MemWr, one Non-Posted header credit for a MemRd (§2.6.1, Table 2-41; a
    MemRd carries no data, so it takes no NPD credit). Credits are counted as consumed when
    the TLP's first beat leaves here; ``credits`` is compared with these counts by the
    gating function of §2.6.1.2, so the engine never sends more than ``credits`` allows, even
    if the TLP then waits downstream. Sources are served round robin, one TLP at a time; a
    TLP is never interleaved with another. ``out`` is registered: a beat offered there stays
    unchanged until it is taken, whatever the sources do meanwhile.

    Only MemRd and MemWr TLPs are expected from the sources.

    Parameters
    ----------
    sources : int
        Number of TLP sources.
    width : int
        Stream width in bits, 64 or 128.

    Attributes
    ----------
    src : In(tlp_signature(width)).array(sources)
        The sources. A source may drop ``valid`` on a TLP's first beat before it is taken.
    out : Out(tlp_signature(width))
        The merged stream.
    credits : In(FcCreditLimit)
        Credit limits (see :data:`~hdl.pcie.dma.layouts.FcCreditLimit`).
    bme : In(1)
        Bus Master Enable; while clear no TLP starts (one already started completes).
    """

    def __init__(self, *, sources: int, width: int = 64):
        if not isinstance(sources, int) or sources < 1:
            raise ValueError(f"sources must be a positive integer, not {sources!r}")
        self.sources = sources
        self.width = width
        super().__init__({
            "src": In(tlp_signature(width)).array(sources),
            "out": Out(tlp_signature(width)),
            "credits": In(FcCreditLimit),
            "bme": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.sources
        cr = self.credits
        ph_used = Signal(FC_HDR_BITS)
        pd_used = Signal(FC_DATA_BITS)
        nph_used = Signal(FC_HDR_BITS)

        eligible = []
        post = []
        data_cr = []
        for i, src in enumerate(self.src):
            hdr = src.payload.hdr
            is_post = (hdr.fmt_type == TlpFmtType.MWR32) | (hdr.fmt_type == TlpFmtType.MWR64)
            is_np = (hdr.fmt_type == TlpFmtType.MRD32) | (hdr.fmt_type == TlpFmtType.MRD64)
            dws = Mux(hdr.length == 0, 1024, hdr.length)
            need_pd = Signal(range(257), name=f"need_pd{i}")
            m.d.comb += need_pd.eq((dws + 3) >> 2)
            post_ok = ((cr.ph_inf | credit_fits(cr.ph, ph_used, 1, FC_HDR_BITS)) &
                       (cr.pd_inf | credit_fits(cr.pd, pd_used, need_pd, FC_DATA_BITS)))
            np_ok = cr.nph_inf | credit_fits(cr.nph, nph_used, 1, FC_HDR_BITS)
            ok = Signal(name=f"eligible{i}")
            m.d.comb += ok.eq(src.valid & src.payload.first & self.bme & cr.valid &
                              (is_post & post_ok | is_np & np_ok))
            eligible.append(ok)
            post.append(is_post)
            data_cr.append(need_pd)

        last_grant = Signal(range(n))
        locked = Signal()
        lock_idx = Signal(range(n))

        # Pick the first eligible source after the last one granted.
        pick = Signal(range(n))
        pick_any = Signal()
        for rr in range(n):
            with m.If(last_grant == rr):
                order = [(rr + 1 + k) % n for k in range(n)]
                for idx in reversed(order):
                    with m.If(eligible[idx]):
                        m.d.comb += [pick.eq(idx), pick_any.eq(1)]

        sel = Mux(locked, lock_idx, pick)
        active = locked | pick_any
        # The chosen beat goes through an output register: the choice may change from cycle
        # to cycle until a beat is taken (a newly eligible source, a source that drops
        # valid), but a beat offered on ``out`` must stay as it is until it is taken (the
        # packetizer behind the function's arbiter reads header DWs from a beat before it
        # takes it).
        take = ~self.out.valid | self.out.ready
        beat = Signal.like(self.out.payload)
        beat_valid = Signal()
        for i, src in enumerate(self.src):
            with m.If(active & (sel == i)):
                m.d.comb += [
                    beat_valid.eq(src.valid),
                    beat.eq(src.payload),
                    src.ready.eq(take),
                ]
        fire = beat_valid & take
        with m.If(fire):
            m.d.sync += [self.out.valid.eq(1), self.out.payload.eq(beat)]
        with m.Elif(self.out.ready):
            m.d.sync += self.out.valid.eq(0)

        with m.If(fire & ~locked):
            m.d.sync += last_grant.eq(pick)
            for i in range(n):
                with m.If(pick == i):
                    with m.If(post[i]):
                        m.d.sync += [ph_used.eq(ph_used + 1),
                                     pd_used.eq(pd_used + data_cr[i])]
                    with m.Else():
                        m.d.sync += nph_used.eq(nph_used + 1)
            with m.If(~beat.last):
                m.d.sync += [locked.eq(1), lock_idx.eq(pick)]
        with m.If(fire & locked & beat.last):
            m.d.sync += locked.eq(0)
        return m
