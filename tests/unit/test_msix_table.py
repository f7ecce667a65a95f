"""MsixTable: a message waiting on tx keeps its entry's address and data while another
vector becomes pending (PCIe Base §6.1.4: each vector's own Message Data), and both are
delivered, in request order here."""
from amaranth.sim import Simulator

from hdl.pcie.msix_table import MsixTable
from tests.unit.register_bus_sim import bus_write

VECTORS = 4
MSG_ADDR = 0xFEE0_0000


def test_message_data_stays_with_its_vector():
    dut = MsixTable(vectors=VECTORS, width=64)
    sent = []

    async def tb(ctx):
        await ctx.tick().repeat(VECTORS + 2)     # the table clears after reset
        for k in range(VECTORS):
            await bus_write(ctx, dut.table, 4 * k + 0, MSG_ADDR)
            await bus_write(ctx, dut.table, 4 * k + 1, 0)
            await bus_write(ctx, dut.table, 4 * k + 2, 0x100 + k)
            await bus_write(ctx, dut.table, 4 * k + 3, 0)         # unmask
        ctx.set(dut.msix_enable, 1)
        ctx.set(dut.bus_master_en, 1)
        ctx.set(dut.tx.ready, 0)

        async def request(vector):
            ctx.set(dut.request.valid, 1)
            ctx.set(dut.request.payload, vector)
            await ctx.tick()
            ctx.set(dut.request.valid, 0)

        # Send vector 2 first, so that the round robin then prefers vectors above 2.
        ctx.set(dut.tx.ready, 1)
        await request(2)
        for _ in range(6):
            _, _, valid, data = await ctx.tick().sample(dut.tx.valid, dut.tx.payload.data)
            if valid:
                sent.append(data & 0xFFFF_FFFF)
        assert sent == [0x102]
        ctx.set(dut.tx.ready, 0)
        await request(1)
        await ctx.tick().until(dut.tx.valid)
        offered = ctx.get(dut.tx.payload.data) & 0xFFFF_FFFF
        assert offered == 0x101
        await request(3)                         # becomes pending while 1 waits on tx
        for _ in range(5):
            await ctx.tick()
            assert ctx.get(dut.tx.valid)
            assert ctx.get(dut.tx.payload.data) & 0xFFFF_FFFF == 0x101, \
                "the offered message changed while waiting"
            assert ctx.get(dut.tx.payload.hdr.addr) == MSG_ADDR
        ctx.set(dut.tx.ready, 1)
        for _ in range(10):
            _, _, valid, data = await ctx.tick().sample(dut.tx.valid, dut.tx.payload.data)
            if valid:
                sent.append(data & 0xFFFF_FFFF)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert sent == [0x102, 0x101, 0x103]
