"""VirtioPciTransport: the blocks wired together. The PCI cfg window and the BAR windows
reach the same registers; the device window is forwarded; doorbells, interrupts, INTx and
the counters come out where they should (virtio 1.2 §4.1.4, §4.1.5)."""
import random

from amaranth.sim import Simulator

from hdl.virtio.spec import CommonCfg, DeviceStatus, Feature, feature_mask
from hdl.virtio.transport_map import TransportMap
from hdl.virtio.virtio_pci_transport import VirtioPciTransport
from tests.unit.register_bus_sim import bus_read, bus_write, read_field, write_field
from tests.unit.sim_streams import seed

CAP = 0xD4
OFFSET, LENGTH, DATA = (CAP + 8) // 4, (CAP + 12) // 4, (CAP + 16) // 4
NQ = 2
FEATURES = feature_mask(Feature.VERSION_1, Feature.IN_ORDER)


def make(msix_vectors=4):
    return VirtioPciTransport(num_queues=NQ, max_queue_size=64, msix_vectors=msix_vectors,
                              device_features=FEATURES, transport_map=TransportMap(),
                              pci_cfg_offset=CAP)


async def cfg_access(ctx, dut, offset, length, value=None):
    """A pci_cfg_data access, as SeaBIOS does it: offset, length, then the data DW."""
    await bus_write(ctx, dut.cfg_ext, OFFSET, offset)
    await bus_write(ctx, dut.cfg_ext, LENGTH, length)
    if value is None:
        return await bus_read(ctx, dut.cfg_ext, DATA)
    await bus_write(ctx, dut.cfg_ext, DATA, value)


def test_pci_cfg_window_reaches_the_common_configuration():
    rng = random.Random(seed())
    dut = make()
    device_accesses = []
    bar_done = []

    async def device_client(ctx):
        bus = dut.device_cfg
        while True:
            _, _, valid, addr, write = await ctx.tick().sample(bus.valid, bus.addr, bus.write)
            ctx.set(bus.ack, 0)
            if valid:
                ctx.set(bus.r_data, 0xD0D0_0000 | addr)
                ctx.set(bus.ack, 1)
                device_accesses.append((addr, write))
                await ctx.tick()
                ctx.set(bus.ack, 0)

    async def bar_traffic(ctx):
        # Meanwhile, the BAR side keeps using the same register client.
        for _ in range(30):
            await write_field(ctx, dut.regs.common, CommonCfg.DEVICE_FEATURE_SELECT, 4, 1)
            assert await read_field(ctx, dut.regs.common, CommonCfg.DEVICE_FEATURE, 4) \
                == FEATURES >> 32
            await ctx.tick().repeat(rng.randrange(1, 3))
        bar_done.append(True)

    async def tb(ctx):
        ctx.set(dut.idle, 1)
        assert await cfg_access(ctx, dut, CommonCfg.NUM_QUEUES, 2) == NQ
        await cfg_access(ctx, dut, CommonCfg.QUEUE_SELECT, 2, 1)
        # (bar_traffic owns the BAR side of the bus: read back through the window too)
        assert await cfg_access(ctx, dut, CommonCfg.QUEUE_SELECT, 2) == 1
        assert await cfg_access(ctx, dut, CommonCfg.DEVICE_STATUS, 4) == 1 << 16
        await cfg_access(ctx, dut, CommonCfg.QUEUE_SIZE, 2, 16)
        assert await cfg_access(ctx, dut, CommonCfg.QUEUE_SIZE, 2) == 16
        assert await cfg_access(ctx, dut, CommonCfg.QUEUE_SIZE, 4) == 16 | 0xFFFF << 16
        assert await cfg_access(ctx, dut, CommonCfg.DEVICE_STATUS, 1) == 0
        # The device window through the PCI cfg window reaches the backend's port.
        assert await cfg_access(ctx, dut, 0x2000 + 8, 4) == 0xD0D0_0002
        assert device_accesses == [(2, 0)]
        while not bar_done:
            await ctx.tick()
        assert await read_field(ctx, dut.regs.common, CommonCfg.QUEUE_SELECT, 2) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.add_testbench(bar_traffic)
    sim.add_testbench(device_client, background=True)
    sim.run()


def bring_up(ctx, dut):
    async def run():
        ctx.set(dut.idle, 1)
        common = dut.regs.common
        await write_field(ctx, common, CommonCfg.DRIVER_FEATURE_SELECT, 4, 1)
        await write_field(ctx, common, CommonCfg.DRIVER_FEATURE, 4, FEATURES >> 32)
        for q, vector in ((0, 1), (1, 0xFFFF)):
            await write_field(ctx, common, CommonCfg.QUEUE_SELECT, 2, q)
            await write_field(ctx, common, CommonCfg.QUEUE_MSIX_VECTOR, 2, vector)
            await write_field(ctx, common, CommonCfg.QUEUE_ENABLE, 2, 1)
        await write_field(ctx, common, CommonCfg.CONFIG_MSIX_VECTOR, 2, 3)
        status = int(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
                     | DeviceStatus.DRIVER_OK)
        await write_field(ctx, common, CommonCfg.DEVICE_STATUS, 1, status)
        assert await read_field(ctx, common, CommonCfg.DEVICE_STATUS, 1) == status
        ctx.set(dut.idle, 0)
    return run()


def test_doorbells_interrupts_and_counters():
    dut = make()

    async def tb(ctx):
        notify = dut.regs.notify
        await bus_write(ctx, notify, 0, 0)          # before DRIVER_OK: ignored
        await bring_up(ctx, dut)
        assert ctx.get(dut.features.in_order) and ctx.get(dut.driver_ok)
        ctx.set(dut.doorbell.ready, 1)
        rang = []
        for dw in (1, 0, 5, 1):
            ctx.set(dut.regs.notify.valid, 1)
            ctx.set(dut.regs.notify.write, 1)
            ctx.set(dut.regs.notify.addr, dw)
            ctx.set(dut.regs.notify.be, 0b0011)
            _, _, valid, q = await ctx.tick().sample(dut.doorbell.valid, dut.doorbell.payload)
            ctx.set(dut.regs.notify.valid, 0)
            if valid:
                rang.append(q)
        assert rang == [1, 0, 1]

        async def interrupt(kind, q=0):
            seen = {"msix": [], "isr": 0}
            if kind == "queue":
                ctx.set(dut.notify.valid, 1)
                ctx.set(dut.notify.payload, q)
                await ctx.tick().until(dut.notify.ready)
                ctx.set(dut.notify.valid, 0)
            else:
                ctx.set(dut.config_changed, 1)
                await ctx.tick()
                ctx.set(dut.config_changed, 0)
            ctx.set(dut.msix.ready, 1)
            for _ in range(4):
                _, _, valid, vector = await ctx.tick().sample(dut.msix.valid, dut.msix.payload)
                if valid:
                    seen["msix"].append(vector)
            seen["isr"] = await bus_read(ctx, dut.regs.isr, 0, be=0b0001)
            return seen

        ctx.set(dut.msix_enable, 1)
        assert await interrupt("queue", 0) == {"msix": [1], "isr": 0}
        assert await interrupt("queue", 1) == {"msix": [], "isr": 0}, "NO_VECTOR: nothing"
        assert await interrupt("config") == {"msix": [3], "isr": 2}
        ctx.set(dut.msix_enable, 0)
        assert await interrupt("queue", 1) == {"msix": [], "isr": 1}
        # With MSI-X off the ISR is the INTx level; reading it clears it.
        ctx.set(dut.notify.valid, 1)
        ctx.set(dut.notify.payload, 0)
        await ctx.tick().until(dut.notify.ready)
        ctx.set(dut.notify.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.intx)
        assert await bus_read(ctx, dut.regs.isr, 0) == 1
        assert not ctx.get(dut.intx)
        # DEVICE_NEEDS_RESET: status bit and a configuration interrupt.
        ctx.set(dut.needs_reset, 1)
        await ctx.tick().repeat(3)
        status = await read_field(ctx, dut.regs.common, CommonCfg.DEVICE_STATUS, 1)
        assert status & DeviceStatus.DEVICE_NEEDS_RESET
        assert ctx.get(dut.intx) and await bus_read(ctx, dut.regs.isr, 0) == 2
        # Reset clears the device; the counters keep counting.
        await write_field(ctx, dut.regs.common, CommonCfg.DEVICE_STATUS, 1, 0)
        ctx.set(dut.needs_reset, 0)
        ctx.set(dut.idle, 1)
        await ctx.tick().repeat(3)
        assert await read_field(ctx, dut.regs.common, CommonCfg.DEVICE_STATUS, 1) == 0
        counters = ctx.get(dut.counters)
        assert counters.notify_ignored == 2 and counters.device_resets == 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
