"""PciCfgAccess: the VIRTIO_PCI_CAP_PCI_CFG window (virtio 1.2 §4.1.4.9): cap.bar,
cap.offset, cap.length, and pci_cfg_data accesses performed on the BAR0 windows with the
right byte enables and lanes; accesses that break §4.1.4.9.2 refused without a BAR access."""
import random

from amaranth.sim import Simulator

from hdl.virtio.pci_cfg_access import PciCfgAccess
from hdl.virtio.transport_map import TransportMap
from tests.unit.register_bus_sim import bus_read, bus_write
from tests.unit.sim_streams import seed

CAP = 0xD4
BAR, OFFSET, LENGTH, DATA = (CAP + 4) // 4, (CAP + 8) // 4, (CAP + 12) // 4, (CAP + 16) // 4


def test_pci_cfg_access():
    rng = random.Random(seed())
    tmap = TransportMap()
    windows = tmap.windows()
    dut = PciCfgAccess(cap_offset=CAP, windows=windows)
    # A register file behind every window, byte-addressed by BAR0 offset.
    mem = {w.offset + i: rng.getrandbits(8) for w in windows for i in range(64)}
    accesses = []

    def client(w):
        bus = getattr(dut.bar, w.name)

        async def serve(ctx):
            while True:
                _, _, valid, addr, write, be, data = await ctx.tick().sample(
                    bus.valid, bus.addr, bus.write, bus.be, bus.w_data)
                ctx.set(bus.ack, 0)
                if not valid:
                    continue
                for _ in range(rng.randrange(3)):       # a client may take its time
                    await ctx.tick()
                base = w.offset + 4 * addr
                ctx.set(bus.r_data, int.from_bytes(bytes(mem.get(base + i, 0) for i in range(4)),
                                                   "little"))
                ctx.set(bus.ack, 1)
                accesses.append((base, write, be, data))
                if write:
                    for i in range(4):
                        if be >> i & 1:
                            mem[base + i] = data >> (8 * i) & 0xFF
                await ctx.tick()
                ctx.set(bus.ack, 0)
        return serve

    async def tb(ctx):
        cfg = dut.cfg
        # The fields are read-write; id and padding (bytes 5..7) read 0.
        await bus_write(ctx, cfg, BAR, 0xFFFF_FF00)
        assert await bus_read(ctx, cfg, BAR) == 0
        await bus_write(ctx, cfg, OFFSET, 0x1234_5678)
        assert await bus_read(ctx, cfg, OFFSET) == 0x1234_5678
        await bus_write(ctx, cfg, LENGTH, 0x0000_0002, be=0b0001)
        assert await bus_read(ctx, cfg, LENGTH) == 2
        assert not accesses

        expected_refused = 0
        for _ in range(120):
            length = rng.choice([1, 2, 4, 4, 3, 0, 8])
            w = rng.choice(windows)
            offset = w.offset + rng.randrange(0, 64, max(1, min(length, 4)))
            bar = 0
            roll = rng.random()
            if roll < 0.05:
                bar = rng.randrange(1, 6)
            elif roll < 0.1:
                offset += 1                              # misaligned for lengths 2 and 4
            elif roll < 0.15:
                offset = rng.choice([tmap.msix_table_offset, tmap.bar_size, 1 << 31])
            await bus_write(ctx, cfg, BAR, bar, be=0b0001)
            await bus_write(ctx, cfg, OFFSET, offset)
            await bus_write(ctx, cfg, LENGTH, length)
            lane = offset & 3
            ok = (bar == 0 and length in (1, 2, 4) and offset % length == 0
                  and any(v.offset <= offset < v.end for v in windows))
            before = len(accesses)
            if rng.random() < 0.5:
                old = None
                if not ok:
                    old = await bus_read(ctx, cfg, DATA)
                    expected_refused += 1
                got = await bus_read(ctx, cfg, DATA, be=rng.choice([0b1111, 0b0001, 0b0011]))
                if ok:
                    want = int.from_bytes(bytes(mem.get(offset + i, 0) for i in range(length)),
                                          "little")
                    assert got == want, (hex(offset), length, hex(got), hex(want))
                    assert accesses[before:] == [(offset & ~3, 0, ((1 << length) - 1) << lane,
                                                  accesses[before][3])]
                else:
                    expected_refused += 1
                    assert got == old and len(accesses) == before, "no access, field kept"
            else:
                value = rng.getrandbits(32)
                be = rng.choice([0b1111, 0b0011, 0b0001])
                # The field's current value (a read fetches it from the BAR when allowed).
                held = await bus_read(ctx, cfg, DATA)
                expected_refused += not ok
                before = len(accesses)
                await bus_write(ctx, cfg, DATA, value, be=be)
                if ok:
                    merged = sum(((value if be >> i & 1 else held) >> (8 * i) & 0xFF) << (8 * i)
                                 for i in range(4))
                    field = merged & ((1 << (8 * length)) - 1)
                    bar_be = ((1 << length) - 1) << lane
                    new = [a for a in accesses[before:] if a[1]]
                    assert len(new) == 1 and new[0][:3] == (offset & ~3, 1, bar_be)
                    assert (new[0][3] >> (8 * lane)) & ((1 << (8 * length)) - 1) == field
                else:
                    expected_refused += 1
                    assert len(accesses) == before
                    merged = sum(((value if be >> i & 1 else held) >> (8 * i) & 0xFF) << (8 * i)
                                 for i in range(4))
                    assert await bus_read(ctx, cfg, DATA) == merged, "written, not performed"
                    expected_refused += 1
        await ctx.tick()
        assert ctx.get(dut.refused) == expected_refused

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    for w in windows:
        sim.add_testbench(client(w), background=True)
    sim.run()
