"""NotifyRegion: one doorbell per queue at queue_notify_off * notify_off_multiplier
(virtio 1.2 §4.1.4.4); notifications for missing or disabled queues ignored and counted."""
import random

import pytest
from amaranth.sim import Simulator

from hdl.virtio.notify_region import NotifyRegion
from tests.unit.register_bus_sim import bus_read, bus_write
from tests.unit.sim_streams import seed

NQ = 5


@pytest.mark.parametrize("multiplier", [4, 16])
def test_notify_region(multiplier):
    rng = random.Random(seed())
    dut = NotifyRegion(num_queues=NQ, notify_off_multiplier=multiplier, addr_width=10)
    enabled = 0b10110
    rang, expected, ignored = [], [], 0

    async def driver(ctx):
        nonlocal ignored
        ctx.set(dut.queue_enabled, enabled)
        # Before DRIVER_OK every notification is ignored.
        await bus_write(ctx, dut.bus, 1 * multiplier // 4, 1, be=0b0011)
        ignored += 1
        ctx.set(dut.driver_ok, 1)
        for _ in range(200):
            dw = rng.choice([q * multiplier // 4 for q in range(NQ + 2)] + [rng.randrange(1024)])
            be = rng.choice([0b0011, 0b1111, 0b0001])
            queue, on_doorbell = divmod(dw * 4, multiplier)
            await bus_write(ctx, dut.bus, dw, queue, be=be)
            if on_doorbell == 0 and queue < NQ and enabled >> queue & 1:
                expected.append(queue)
            else:
                ignored += 1
            assert await bus_read(ctx, dut.bus, dw) == 0, "the region reads 0"
        await ctx.tick().repeat(4)
        assert ctx.get(dut.ignored) == ignored

    async def engine(ctx):
        while True:
            ready = rng.random() < 0.6     # a doorbell waits while it is not taken
            ctx.set(dut.doorbell.ready, ready)
            _, _, valid, q = await ctx.tick().sample(dut.doorbell.valid, dut.doorbell.payload)
            if valid and ready:
                rang.append(q)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(engine, background=True)
    sim.run()
    assert rang == expected and len(expected) > 20
