"""Stream drivers for Amaranth-simulator testbenches, with random stalls on both sides."""
import os
import random

from amaranth.lib import data
from amaranth.sim import Simulator

from sim.amaranth_streams import seed_for

__all__ = ["seed", "send", "recv", "run_desc_inp_out"]


def seed() -> int:
    """The seed for a randomized test: ``SEED`` from the environment or a new one (printed
    with the test's name)."""
    return seed_for(os.environ.get("PYTEST_CURRENT_TEST", "test").split(" ")[0])


def _const(stream, item):
    shape = stream.payload.shape() if hasattr(stream.payload, "shape") else None
    if isinstance(item, dict) and isinstance(shape, data.Layout):
        return shape.const(item)
    return item


async def send(ctx, stream, items, rng: random.Random, p_valid: float = 0.7):
    """Drive ``items`` on ``stream`` in order, idling at random between them."""
    for item in items:
        while rng.random() > p_valid:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(stream.payload, _const(stream, item))
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def recv(ctx, stream, count: int, rng: random.Random, p_ready: float = 0.7):
    """Take ``count`` transfers from ``stream``, with random back-pressure; return payloads."""
    got = []
    while len(got) < count:
        ready = rng.random() < p_ready
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid and ready:
            got.append(payload)
    ctx.set(stream.ready, 0)
    return got


def run_desc_inp_out(dut, descs, beats, out_count: int, rng: random.Random) -> list:
    """Simulate a block with a ``desc`` and an ``inp`` stream in and an ``out`` stream out
    (the DMA aligners): send both with random stalls, take ``out_count`` outputs with random
    back-pressure, return their payloads."""
    result = []

    async def tb_desc(ctx):
        await send(ctx, dut.desc, descs, rng)

    async def tb_inp(ctx):
        await send(ctx, dut.inp, beats, rng)

    async def tb_out(ctx):
        result.extend(await recv(ctx, dut.out, out_count, rng))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb_desc, background=True)
    sim.add_testbench(tb_inp, background=True)
    sim.add_testbench(tb_out)
    sim.run()
    return result
