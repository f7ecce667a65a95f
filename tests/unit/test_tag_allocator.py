"""TagAllocator: every tag once, tags above 31 only with Extended Tag (PCIe Base §2.2.6.2)."""
import random

from amaranth.sim import Simulator

from hdl.pcie.dma.tag_allocator import TagAllocator
from tests.unit.sim_streams import seed


def test_tag_allocator():
    rng = random.Random(seed())
    dut = TagAllocator(tags=48)
    log = []

    async def tb(ctx):
        async def take(n):
            got = []
            ctx.set(dut.alloc.ready, 1)
            for _ in range(n * 3):
                _, _, valid, tag = await ctx.tick().sample(dut.alloc.valid, dut.alloc.payload)
                if valid:
                    got.append(tag)
                if len(got) == n:
                    break
            ctx.set(dut.alloc.ready, 0)
            return got

        async def give(tags):
            for t in tags:
                ctx.set(dut.free.valid, 1)
                ctx.set(dut.free.payload, t)
                await ctx.tick()
            ctx.set(dut.free.valid, 0)

        for _ in range(60):         # the free lists fill after reset
            await ctx.tick()
        assert not ctx.get(dut.pending), "no tag handed out yet"
        low = await take(40)
        assert ctx.get(dut.pending)
        assert sorted(low) == list(range(32)), "without Extended Tag: exactly tags 0..31"
        ctx.set(dut.ext_tag_en, 1)
        high = await take(40)
        assert sorted(high) == list(range(32, 48))
        back = rng.sample(low + high, 20)
        await give(back)
        again = await take(40)
        assert sorted(again) == sorted(back)
        ctx.set(dut.ext_tag_en, 0)
        await give(again)
        only_low = await take(40)
        assert sorted(only_low) == sorted(t for t in back if t < 32)
        await give(set(low + high) - set(back) | set(only_low))
        await ctx.tick()
        assert sorted(low + high) == list(range(48))
        assert not ctx.get(dut.pending), "every tag is back: nothing pending"
        log.append("done")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert log == ["done"]

