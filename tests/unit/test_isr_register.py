"""IsrRegister: read-to-clear ISR status byte (virtio 1.2 §4.1.4.5); a bit set during the
clearing read survives; only byte 0 of DW 0 has an effect."""
from amaranth.sim import Simulator

from hdl.virtio.isr_register import IsrRegister
from hdl.virtio.spec import IsrStatus
from tests.unit.register_bus_sim import bus_read, bus_write

QUEUE, CONFIG = int(IsrStatus.QUEUE), int(IsrStatus.DEVICE_CONFIG)


def test_isr_register():
    dut = IsrRegister(addr_width=10)

    async def tb(ctx):
        async def pulse(bits):
            ctx.set(dut.set, bits)
            await ctx.tick()
            ctx.set(dut.set, 0)

        assert not ctx.get(dut.pending)
        await pulse(QUEUE)
        assert ctx.get(dut.pending)
        # Reads that do not cover byte 0 of DW 0, and writes, change nothing.
        assert await bus_read(ctx, dut.bus, 0, be=0b1110) == 0
        assert await bus_read(ctx, dut.bus, 1) == 0
        await bus_write(ctx, dut.bus, 0, 0)
        assert ctx.get(dut.pending)
        await pulse(CONFIG)
        assert await bus_read(ctx, dut.bus, 0, be=0b0001) == QUEUE | CONFIG
        assert not ctx.get(dut.pending), "read to clear"
        assert await bus_read(ctx, dut.bus, 0) == 0
        # A bit set in the very cycle of the clearing read is kept for the next read.
        await pulse(QUEUE)
        ctx.set(dut.set, CONFIG)
        value = await bus_read(ctx, dut.bus, 0)
        ctx.set(dut.set, 0)
        assert value == QUEUE
        assert ctx.get(dut.pending)
        assert await bus_read(ctx, dut.bus, 0) == CONFIG
        # The device reset empties it.
        await pulse(QUEUE | CONFIG)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert not ctx.get(dut.pending)
        assert await bus_read(ctx, dut.bus, 0) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
