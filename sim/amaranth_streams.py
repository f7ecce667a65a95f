"""Drive and watch ``amaranth.lib.stream`` ports from Amaranth-simulator testbenches.

Payloads are handled as dicts through :mod:`sim.layout`; both helpers can insert random idle
cycles (gaps on the source side, back-pressure on the sink side) from a caller's ``random``
instance, so a seeded test replays exactly.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterable

from amaranth.lib import data

from .layout import pack, unpack

__all__ = ["seed_for", "send_beats", "recv_beats"]


def seed_for(name: str) -> int:
    """The seed for a randomized Amaranth-sim test: ``SEED=`` if set, else a fresh one (printed)."""
    seed = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    print(f"{name}: SEED={seed}")
    return seed


async def send_beats(ctx, stream, beats: Iterable[dict], rng: random.Random | None = None,
                     idle: float = 0.0) -> None:
    """Present each beat on ``stream`` until accepted, with random idle cycles before each."""
    layout = data.Layout.cast(stream.payload.shape())
    for beat in beats:
        while rng is not None and rng.random() < idle:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(stream.payload.as_value(), pack(layout, beat))
        ctx.set(stream.valid, 1)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def recv_beats(ctx, stream, count: int | None = None, *, until_last: int | None = None,
                     rng: random.Random | None = None, idle: float = 0.0) -> list[dict]:
    """Accept ``count`` beats (or beats up to the ``until_last``-th one with ``last`` set)."""
    layout = data.Layout.cast(stream.payload.shape())
    beats: list[dict] = []
    lasts = 0
    while True:
        if count is not None and len(beats) >= count:
            break
        if until_last is not None and lasts >= until_last:
            break
        while rng is not None and rng.random() < idle:
            ctx.set(stream.ready, 0)
            await ctx.tick()
        ctx.set(stream.ready, 1)
        value, = await ctx.tick().sample(stream.payload.as_value()).until(stream.valid)
        beat = unpack(layout, value)
        beats.append(beat)
        lasts += beat.get("last", 0)
    ctx.set(stream.ready, 0)
    return beats
