"""Stream drivers for Amaranth-simulator testbenches, with random stalls on both sides."""
import os
import random

from amaranth.lib import data

__all__ = ["seed", "send", "recv"]


def seed() -> int:
    """The seed for a randomized test: ``SEED`` from the environment or a new one (printed)."""
    value = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    print(f"SEED={value}")
    return value


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
