"""Amaranth-simulator tests of hdl/blk/byte_repacker.py.

A random byte string enters in beats of random size (1 to width/8 bytes, garbage in the
unused lanes) and leaves cut into random segments; every segment must come out from lane 0
in ceil(L / B) beats, full but the last, with ``last`` and ``n`` right, under random stalls
on all three streams. A second test checks one beat per clock with full beats.
"""
import random

import pytest
from amaranth.sim import Simulator

from hdl.blk.byte_repacker import ByteRepacker
from tests.unit.sim_streams import seed


def _run(dut, *benches, cycles: int):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run_until(cycles * 1e-8)


def _cut(rng: random.Random, total: int, low: int, high: int) -> list[int]:
    parts = []
    while total:
        part = min(total, rng.randint(low, high))
        parts.append(part)
        total -= part
    return parts


@pytest.mark.parametrize("width", [64, 128])
def test_random_segments(width):
    rng = random.Random(seed())
    nbytes = width // 8
    dut = ByteRepacker(width=width, len_width=16)
    stream_bytes = bytes(rng.randrange(256) for _ in range(3000))
    in_sizes = _cut(rng, len(stream_bytes), 1, nbytes)
    segments = _cut(rng, len(stream_bytes), 1, 3 * nbytes + 5)
    got: list[tuple[int, int, bool]] = []
    finished = []

    async def source(ctx):
        pos = 0
        for size in in_sizes:
            while rng.random() < 0.3:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            chunk = stream_bytes[pos:pos + size] + bytes(rng.randrange(256)
                                                         for _ in range(nbytes - size))
            ctx.set(dut.i.payload, {"data": int.from_bytes(chunk, "little"), "n": size})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            pos += size
        ctx.set(dut.i.valid, 0)

    async def segs(ctx):
        for length in segments:
            while rng.random() < 0.5:
                ctx.set(dut.seg.valid, 0)
                await ctx.tick()
            ctx.set(dut.seg.payload, length)
            ctx.set(dut.seg.valid, 1)
            await ctx.tick().until(dut.seg.ready)
        ctx.set(dut.seg.valid, 0)

    async def sink(ctx):
        while True:
            ready = rng.random() < 0.7
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid and ready:
                got.append((payload.data, payload.n, bool(payload.last)))
                if sum(1 for beat in got if beat[2]) == len(segments):
                    finished.append(True)
                    return

    _run(dut, source, segs, sink, cycles=20000)
    assert finished, f"only {sum(1 for b in got if b[2])} of {len(segments)} segments came out"
    pos = 0
    beats = iter(got)
    for length in segments:
        expected_beats = -(-length // nbytes)
        for k in range(expected_beats):
            value, n, last = next(beats)
            want_n = min(nbytes, length - k * nbytes)
            assert n == want_n and last == (k == expected_beats - 1), \
                f"segment at byte {pos}, beat {k}: n={n} last={last}"
            assert value.to_bytes(nbytes, "little")[:n] == stream_bytes[pos:pos + n], \
                f"segment at byte {pos}, beat {k}: wrong bytes"
            pos += n
    assert pos == len(stream_bytes)


def test_full_beats_one_per_clock():
    width = 64
    dut = ByteRepacker(width=width, len_width=16)
    beats = 64
    taken = []

    async def bench(ctx):
        ctx.set(dut.seg.payload, beats * 8)
        ctx.set(dut.seg.valid, 1)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for k in range(beats + 4):
            ctx.set(dut.i.payload, {"data": k, "n": 8})
            ctx.set(dut.i.valid, k < beats)
            _, _, i_ready, o_valid, o_payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload)
            if k < beats:
                assert i_ready, f"input stalled at beat {k}"
            if o_valid:
                taken.append(o_payload.data)
            ctx.set(dut.seg.valid, 0)

    _run(dut, bench, cycles=beats + 10)
    assert taken == list(range(beats))
