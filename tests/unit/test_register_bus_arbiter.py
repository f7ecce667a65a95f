"""RegisterBusArbiter: two masters share one register client; every access reaches the
client once, unchanged, the answer goes back to its master, and a waiting master is served
next (round robin)."""
import random

from amaranth.sim import Simulator

from hdl.virtio.register_bus_arbiter import RegisterBusArbiter
from tests.unit.register_bus_sim import bus_read, bus_write
from tests.unit.sim_streams import seed

OPS = 80


def test_register_bus_arbiter():
    rng = random.Random(seed())
    dut = RegisterBusArbiter(addr_width=4, masters=2)
    mem = [rng.getrandbits(32) for _ in range(16)]
    initial = list(mem)
    served = []                 # (master, addr, write, data) in client order
    unfair = []

    async def client(ctx):
        bus = dut.client
        while True:
            ctx.set(bus.ack, 0)
            _, _, valid, addr, write, data, v0, v1 = await ctx.tick().sample(
                bus.valid, bus.addr, bus.write, bus.w_data, dut.inputs[0].valid,
                dut.inputs[1].valid)
            if not valid:
                continue
            master = addr // 8          # master 0 owns DWs 0..7, master 1 DWs 8..15
            # Granted in this cycle: was the other one waiting too?
            other_waiting = (v0, v1)[1 - master]
            for _ in range(rng.choice([0, 0, 0, 1, 3])):
                _, _, held, again = await ctx.tick().sample(bus.valid, bus.addr)
                assert held and again == addr, "a request is held until it is acknowledged"
            ctx.set(bus.r_data, mem[addr])
            ctx.set(bus.ack, 1)
            await ctx.tick()
            if other_waiting and served and served[-1][0] == master:
                unfair.append(len(served))
            served.append((master, addr, write, data))
            if write:
                mem[addr] = data

    results = {0: [], 1: []}

    def master(k):
        async def run(ctx):
            bus = dut.inputs[k]
            for _ in range(OPS):
                addr = 8 * k + rng.randrange(8)
                if rng.random() < 0.5:
                    value = rng.getrandbits(32)
                    await bus_write(ctx, bus, addr, value)
                    results[k].append((addr, 1, value))
                else:
                    results[k].append((addr, 0, await bus_read(ctx, bus, addr)))
                if rng.random() < 0.3:
                    await ctx.tick()
        return run

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(client, background=True)
    sim.add_testbench(master(0))
    sim.add_testbench(master(1))
    sim.run()

    assert not unfair, f"a master was served twice in a row while the other waited: {unfair}"
    for k in (0, 1):
        mine = [(addr, write, data) for m, addr, write, data in served if m == k]
        assert len(mine) == OPS
        model = list(initial)
        for (addr, write, data), (got_addr, got_write, got) in zip(mine, results[k]):
            assert (addr, write) == (got_addr, got_write), "accesses in the master's order"
            if write:
                assert data == got
                model[addr] = got
            else:
                assert got == model[addr], "the read answer reached its own master"
    masters = [m for m, *_ in served]
    assert sum(a != b for a, b in zip(masters, masters[1:])) > OPS // 2, "interleaved"
