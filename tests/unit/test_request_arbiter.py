"""RequestArbiter (DMA engine): whole TLPs, never interleaved, and a beat offered on ``out``
never changes until it is taken, even when another source becomes eligible or the chosen
one drops ``valid`` meanwhile (the function's packetizer reads header DWs from a beat before
it takes it)."""
import random

from amaranth.sim import Simulator

from hdl.pcie.dma.request_arbiter import RequestArbiter
from hdl.pcie.spec import TlpFmtType
from tests.unit.sim_streams import seed

SOURCES = 3


def test_request_arbiter_holds_offered_beats():
    rng = random.Random(seed())
    dut = RequestArbiter(sources=SOURCES, width=64)
    # Each source sends TLPs numbered in its tag: (source, n) in the header, beat index in data.
    plan = {i: [rng.randint(1, 4) for _ in range(60)] for i in range(SOURCES)}
    got = []

    def source(i):
        async def run(ctx):
            src = dut.src[i]
            for n, beats in enumerate(plan[i]):
                for b in range(beats):
                    hdr = {"fmt_type": TlpFmtType.MWR32 if i else TlpFmtType.MRD32,
                           "tag": (i << 6) | n, "length": 1, "requester_id": i}
                    while rng.random() < 0.3:
                        ctx.set(src.valid, 0)
                        await ctx.tick()
                    ctx.set(src.payload, {"hdr": hdr, "data": b, "keep": 1,
                                          "first": b == 0, "last": b == beats - 1})
                    ctx.set(src.valid, 1)
                    # A source may drop valid on a first beat that has not been taken.
                    if b == 0 and rng.random() < 0.2:
                        _, _, taken = await ctx.tick().sample(src.ready)
                        if taken:
                            continue
                        ctx.set(src.valid, 0)
                        await ctx.tick()
                        ctx.set(src.valid, 1)
                    await ctx.tick().until(src.ready)
                ctx.set(src.valid, 0)
        return run

    async def sink(ctx):
        ctx.set(dut.bme, 1)
        ctx.set(dut.credits, {"valid": 1, "ph_inf": 1, "pd_inf": 1, "nph_inf": 1,
                              "npd_inf": 1})
        held = None
        total = sum(sum(p) for p in plan.values())
        while len(got) < total:
            ready = rng.random() < 0.4
            ctx.set(dut.out.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.out.valid, dut.out.payload)
            if not valid:
                assert held is None, "an offered beat was withdrawn"
                continue
            beat = (payload.hdr.tag, payload.data, payload.first, payload.last)
            if held is not None:
                assert beat == held, f"offered beat changed from {held} to {beat}"
            if ready:
                got.append(beat)
                held = None
            else:
                held = beat

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for i in range(SOURCES):
        sim.add_testbench(source(i), background=True)
    sim.add_testbench(sink)
    sim.run()
    # Whole TLPs, not interleaved, each source's in order.
    tlps, current = [], None
    for tag, data, first, last in got:
        if current is None:
            assert first and data == 0
            current = [tag, 1]
        else:
            assert tag == current[0] and data == current[1], "TLPs interleaved"
            current[1] += 1
        if last:
            tlps.append(tuple(current))
            current = None
    for i in range(SOURCES):
        mine = [(tag & 63, beats) for tag, beats in tlps if tag >> 6 == i]
        assert mine == list(enumerate(plan[i]))
