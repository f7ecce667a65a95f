"""Amaranth-simulator tests of hdl/virtio/dma_read_arbiter.py and dma_write_arbiter.py.

Clients issue random commands with random back-pressure; a responder stands in for the DMA
engine (data in command order, ``done`` per write). Each test checks against a plain model:
every client gets exactly its own data, in its own order; write data reaches the bus in
command order and ``done`` goes back to the right client; ``drain`` swallows outstanding
reads; ``idle`` tells the truth.
"""
import os
import random

from amaranth.sim import Simulator

from hdl.pcie.dma_port import MAX_DMA_LEN
from hdl.virtio.dma_read_arbiter import DmaReadArbiter
from hdl.virtio.dma_write_arbiter import DmaWriteArbiter


def _seed() -> int:
    seed = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    print(f"SEED={seed}")
    return seed


def _beats(length: int, width: int = 64) -> int:
    return -(-length // (width // 8))


def _run(dut, bench, cycles=4000):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(cycles * 1e-8)


def test_read_arbiter_routes_in_order():
    rng = random.Random(_seed())
    n = 3
    dut = DmaReadArbiter(num_clients=n, width=64, max_outstanding=4)
    todo = [[(rng.randrange(1 << 40), rng.randint(1, 40)) for _ in range(12)]
            for _ in range(n)]
    received = [[] for _ in range(n)]
    expected = [[] for _ in range(n)]

    async def bench(ctx):
        issued = [0] * n
        bus_queue = []              # (tag, beats left) in bus command order
        tag_of = {}
        seen = 0
        for cycle in range(3000):
            # Clients offer their next command and hold it until taken.
            for i, client in enumerate(dut.clients):
                if issued[i] < len(todo[i]):
                    addr, length = todo[i][issued[i]]
                    ctx.set(client.cmd.valid, 1)
                    ctx.set(client.cmd.payload, {"addr": addr, "len": length})
                else:
                    ctx.set(client.cmd.valid, 0)
                ctx.set(client.data.ready, rng.random() < 0.7)
            ctx.set(dut.bus.cmd.ready, rng.random() < 0.6)
            # The responder: beats of the oldest command, carrying (command number, beat).
            offer = bool(bus_queue) and rng.random() < 0.8
            if offer:
                tag, left = bus_queue[0]
                ctx.set(dut.bus.data.payload.data, (tag << 16) | left)
                ctx.set(dut.bus.data.payload.last, left == 1)
            ctx.set(dut.bus.data.valid, offer)
            await ctx.delay(1e-9)
            if ctx.get(dut.bus.cmd.valid) and ctx.get(dut.bus.cmd.ready):
                cmd = ctx.get(dut.bus.cmd.payload)
                tag_of[seen] = (cmd.addr, cmd.len)
                bus_queue.append([seen, _beats(cmd.len)])
                seen += 1
            for i, client in enumerate(dut.clients):
                if ctx.get(client.cmd.valid) and ctx.get(client.cmd.ready):
                    expected[i].append(todo[i][issued[i]])
                    issued[i] += 1
                if ctx.get(client.data.valid) and ctx.get(client.data.ready):
                    word = ctx.get(client.data.payload.data)
                    received[i].append((tag_of[word >> 16], word & 0xFFFF,
                                         ctx.get(client.data.payload.last)))
            if offer and ctx.get(dut.bus.data.ready):
                bus_queue[0][1] -= 1
                if bus_queue[0][1] == 0:
                    bus_queue.pop(0)
            await ctx.tick()
        assert ctx.get(dut.idle)

    _run(dut, bench)
    for i in range(n):
        want = []
        for addr, length in expected[i]:
            beats = _beats(length)
            want += [((addr, length), beats - k, int(k == beats - 1)) for k in range(beats)]
        assert received[i] == want, f"client {i}"
        assert len(expected[i]) == len(todo[i])


def test_read_arbiter_drain():
    """Under drain, outstanding data is taken by the arbiter, never given to a client."""
    dut = DmaReadArbiter(num_clients=2, width=64, max_outstanding=4)

    async def bench(ctx):
        ctx.set(dut.bus.cmd.ready, 1)
        taken = [False, False]
        for client, length in zip(dut.clients, (24, 8)):
            ctx.set(client.cmd.payload, {"addr": 0x1000, "len": length})
        for _ in range(6):
            for i, client in enumerate(dut.clients):
                ctx.set(client.cmd.valid, not taken[i])
            await ctx.delay(1e-9)
            took = False
            for i, client in enumerate(dut.clients):
                if ctx.get(client.cmd.valid) and ctx.get(client.cmd.ready):
                    taken[i] = took = True
            await ctx.tick()
            if took:        # outstanding from the very next cycle on
                assert not ctx.get(dut.idle)
        assert taken == [True, True]
        for client in dut.clients:
            ctx.set(client.cmd.valid, 0)
        assert not ctx.get(dut.idle)
        ctx.set(dut.drain, 1)
        for client in dut.clients:
            ctx.set(client.data.ready, 1)
        for last in (0, 0, 1, 1):
            ctx.set(dut.bus.data.valid, 1)
            ctx.set(dut.bus.data.payload.last, last)
            await ctx.delay(1e-9)
            assert ctx.get(dut.bus.data.ready)
            assert not any(ctx.get(c.data.valid) for c in dut.clients)
            await ctx.tick()
        ctx.set(dut.bus.data.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.idle)

    _run(dut, bench, 100)


def test_write_arbiter_keeps_data_with_its_command():
    rng = random.Random(_seed())
    n = 2
    dut = DmaWriteArbiter(num_clients=n, width=64, max_outstanding=4)
    todo = [[(i << 32 | k * 64, rng.randint(1, 30)) for k in range(15)] for i in range(n)]
    bus_cmds, bus_beats = [], []
    dones = [0] * n

    async def bench(ctx):
        issued = [0] * n
        sent = [[] for _ in range(n)]       # per client: beats owed, in command order
        pending_done = 0
        for cycle in range(3000):
            for i, client in enumerate(dut.clients):
                if issued[i] < len(todo[i]):
                    addr, length = todo[i][issued[i]]
                    ctx.set(client.cmd.valid, 1)
                    ctx.set(client.cmd.payload, {"addr": addr, "len": length})
                else:
                    ctx.set(client.cmd.valid, 0)
                if sent[i]:
                    addr, k, beats = sent[i][0]
                    ctx.set(client.data.valid, rng.random() < 0.8)
                    ctx.set(client.data.payload.data, addr + k)
                    ctx.set(client.data.payload.last, k == beats - 1)
                else:
                    ctx.set(client.data.valid, 0)
                ctx.set(client.done.ready, 1)
            ctx.set(dut.bus.cmd.ready, rng.random() < 0.6)
            ctx.set(dut.bus.data.ready, rng.random() < 0.7)
            ctx.set(dut.bus.done.valid, pending_done > 0 and rng.random() < 0.5)
            await ctx.delay(1e-9)
            if ctx.get(dut.bus.cmd.valid) and ctx.get(dut.bus.cmd.ready):
                bus_cmds.append(ctx.get(dut.bus.cmd.payload.addr))
                check_busy = True
            else:
                check_busy = False
            if ctx.get(dut.bus.data.valid) and ctx.get(dut.bus.data.ready):
                bus_beats.append((ctx.get(dut.bus.data.payload.data),
                                  ctx.get(dut.bus.data.payload.last)))
                if ctx.get(dut.bus.data.payload.last):
                    pending_done += 1
            if ctx.get(dut.bus.done.valid) and ctx.get(dut.bus.done.ready):
                pending_done -= 1
            for i, client in enumerate(dut.clients):
                if ctx.get(client.cmd.valid) and ctx.get(client.cmd.ready):
                    addr, length = todo[i][issued[i]]
                    sent[i].append([addr, 0, _beats(length)])
                    issued[i] += 1
                if ctx.get(client.data.valid) and ctx.get(client.data.ready):
                    sent[i][0][1] += 1
                    if sent[i][0][1] == sent[i][0][2]:
                        sent[i].pop(0)
                if ctx.get(client.done.valid) and ctx.get(client.done.ready):
                    dones[i] += 1
            await ctx.tick()
            if check_busy:  # a command just taken is outstanding until its done
                assert not ctx.get(dut.idle)
        assert ctx.get(dut.idle)

    _run(dut, bench)
    # The bus saw every command, and the data of each command right after the data of
    # the command before it.
    want = []
    by_addr = {addr: length for cmds in todo for addr, length in cmds}
    for addr in bus_cmds:
        beats = _beats(by_addr[addr])
        want += [(addr + k, int(k == beats - 1)) for k in range(beats)]
    assert bus_beats == want
    assert sorted(bus_cmds) == sorted(by_addr)
    assert dones == [len(t) for t in todo]
    assert MAX_DMA_LEN >= max(by_addr.values())
