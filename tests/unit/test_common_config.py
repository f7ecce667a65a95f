"""CommonConfig: virtio 1.2 §4.1.4.3 register semantics, feature negotiation, device status
and the reset handshake. Expected values come from the spec and the documented policy
(``docs/virtio-transport.md``), never from the RTL."""
import random

import pytest
from amaranth.sim import Simulator

from hdl.virtio.common_config import CommonConfig
from hdl.virtio.spec import CommonCfg, DeviceStatus, Feature, VIRTIO_MSI_NO_VECTOR, feature_mask
from tests.unit.register_bus_sim import bus_read, bus_write, read_field, write_field
from tests.unit.sim_streams import seed

NQ = 3
MAX_SIZE = 256
VECTORS = 4
OFFERED = feature_mask(Feature.VERSION_1, Feature.IN_ORDER, Feature.EVENT_IDX,
                       Feature.INDIRECT_DESC, Feature.ACCESS_PLATFORM, 3)
W = CommonCfg.WIDTH
ACK, DRV, DOK, FOK, NEEDS, FAILED = (int(DeviceStatus.ACKNOWLEDGE), int(DeviceStatus.DRIVER),
                                      int(DeviceStatus.DRIVER_OK),
                                      int(DeviceStatus.FEATURES_OK),
                                      int(DeviceStatus.DEVICE_NEEDS_RESET),
                                      int(DeviceStatus.FAILED))


def make():
    return CommonConfig(num_queues=NQ, max_queue_size=MAX_SIZE, msix_vectors=VECTORS,
                        device_features=OFFERED)


def run(dut, bench, *, idle=True) -> dict:
    """Run ``bench(ctx)``; the engine/backend side reports idle at once unless told not.
    Returns how many cycles each of ``events`` pulsed."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    counts = {"write_ignored": 0, "features_refused": 0}

    async def tb(ctx):
        ctx.set(dut.idle, int(idle))
        await bench(ctx)

    async def count(ctx):
        async for _, _, ignored, refused in ctx.tick().sample(dut.events.write_ignored,
                                                               dut.events.features_refused):
            counts["write_ignored"] += ignored
            counts["features_refused"] += refused

    sim.add_testbench(tb)
    sim.add_process(count)
    sim.run()
    return counts


class Regs:
    """Natural-width field access to the structure (§4.1.3.1)."""

    def __init__(self, ctx, dut):
        self.ctx, self.bus = ctx, dut.bus

    async def rd(self, offset):
        return await read_field(self.ctx, self.bus, offset, W[offset])

    async def wr(self, offset, value):
        await write_field(self.ctx, self.bus, offset, W[offset], value)

    async def set_features(self, features):
        for select in range(4):
            await self.wr(CommonCfg.DRIVER_FEATURE_SELECT, select)
            await self.wr(CommonCfg.DRIVER_FEATURE, (features >> (32 * select)) & 0xFFFF_FFFF)

    async def status(self):
        return await self.rd(CommonCfg.DEVICE_STATUS)


def test_device_features_and_static_fields():
    dut = make()

    async def bench(ctx):
        r = Regs(ctx, dut)
        for select in range(5):
            await r.wr(CommonCfg.DEVICE_FEATURE_SELECT, select)
            assert await r.rd(CommonCfg.DEVICE_FEATURE_SELECT) == select
            want = (OFFERED >> (32 * select)) & 0xFFFF_FFFF
            assert await r.rd(CommonCfg.DEVICE_FEATURE) == want, f"device_feature[{select}]"
        assert await r.rd(CommonCfg.NUM_QUEUES) == NQ
        assert await r.rd(CommonCfg.CONFIG_MSIX_VECTOR) == VIRTIO_MSI_NO_VECTOR
        assert await r.status() == 0
        assert await r.rd(CommonCfg.CONFIG_GENERATION) == 0
        # Read-only fields ignore writes.
        await r.wr(CommonCfg.NUM_QUEUES, 77)
        await r.wr(CommonCfg.DEVICE_FEATURE, 0)
        assert await r.rd(CommonCfg.NUM_QUEUES) == NQ
        await r.wr(CommonCfg.DEVICE_FEATURE_SELECT, 1)
        assert await r.rd(CommonCfg.DEVICE_FEATURE) == OFFERED >> 32
        # NOTIF_CONFIG_DATA / RING_RESET are not offered: both read 0; the rest of the
        # window reads 0.
        assert await r.rd(CommonCfg.QUEUE_NOTIFY_DATA) == 0
        assert await r.rd(CommonCfg.QUEUE_RESET) == 0
        for dw in (CommonCfg.SIZE // 4, 0x40 // 4, 1023):
            assert await bus_read(ctx, dut.bus, dw) == 0

    run(dut, bench)


@pytest.mark.parametrize("case", ["no_version_1", "not_offered", "above_63", "valid"])
def test_features_ok_policy(case):
    """FEATURES_OK only for a set the device accepts (§2.2.1, §6.1); refused otherwise."""
    dut = make()
    base = feature_mask(Feature.VERSION_1, Feature.IN_ORDER, Feature.EVENT_IDX)
    driver = {"no_version_1": feature_mask(Feature.IN_ORDER),
              "not_offered": base | feature_mask(Feature.RING_PACKED),
              "above_63": base | 1 << 70,
              "valid": base}[case]
    accept = case == "valid"

    async def bench(ctx):
        r = Regs(ctx, dut)
        await r.wr(CommonCfg.DEVICE_STATUS, ACK)
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV)
        await r.set_features(driver)
        for select in range(2):     # the device presents what the driver wrote
            await r.wr(CommonCfg.DRIVER_FEATURE_SELECT, select)
            assert await r.rd(CommonCfg.DRIVER_FEATURE) == (driver >> (32 * select)) \
                & 0xFFFF_FFFF
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK)
        status = await r.status()
        assert status == (ACK | DRV | FOK if accept else ACK | DRV), hex(status)
        features = ctx.get(dut.features)
        if accept:
            assert ctx.get(dut.driver_features) == driver
            assert (features.in_order, features.event_idx, features.indirect_desc) == (1, 1, 0)
            # The negotiated set is frozen: later writes are ignored (and counted).
            await r.wr(CommonCfg.DRIVER_FEATURE_SELECT, 0)
            await r.wr(CommonCfg.DRIVER_FEATURE, 0)
            assert await r.rd(CommonCfg.DRIVER_FEATURE) == driver & 0xFFFF_FFFF
            await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK | DOK)
            assert await r.status() == ACK | DRV | FOK | DOK
            assert ctx.get(dut.driver_ok) and not ctx.get(dut.engine_reset)
        else:
            assert ctx.get(dut.driver_features) == 0
            assert (features.in_order, features.event_idx, features.indirect_desc) == (0, 0, 0)
            # Without FEATURES_OK the device does not start.
            await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK | DOK)
            assert not await r.status() & (DOK | FOK)
            assert not ctx.get(dut.driver_ok) and ctx.get(dut.engine_reset)

    counts = run(dut, bench)
    assert counts["features_refused"] == (0 if accept else 2)   # each FEATURES_OK write
    # valid: the frozen driver_feature write; refused: DRIVER_OK without FEATURES_OK.
    assert counts["write_ignored"] == 1


def test_status_bits_sticky_and_needs_reset():
    dut = make()

    async def bench(ctx):
        r = Regs(ctx, dut)
        await r.set_features(feature_mask(Feature.VERSION_1))
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK)
        # A write that omits bits does not clear them; the driver cannot set NEEDS_RESET.
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | NEEDS)
        assert await r.status() == ACK | DRV | FOK
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK | DOK)
        # needs_reset while running: DEVICE_NEEDS_RESET and one configuration event.
        events = 0
        ctx.set(dut.needs_reset, 1)
        for _ in range(6):
            _, _, pulse = await ctx.tick().sample(dut.config_event)
            events += pulse
        assert events == 1
        assert await r.status() == ACK | DRV | FOK | DOK | NEEDS
        await r.wr(CommonCfg.DEVICE_STATUS, FAILED)
        assert await r.status() == ACK | DRV | FOK | DOK | NEEDS | FAILED
        # Reset clears it (the engine's needs_reset falls under reset); before DRIVER_OK the
        # bit is still set, but nobody is notified.
        await r.wr(CommonCfg.DEVICE_STATUS, 0)
        ctx.set(dut.needs_reset, 0)
        assert [await r.status() for _ in range(3)][-1] == 0
        await r.wr(CommonCfg.DEVICE_STATUS, ACK)
        ctx.set(dut.needs_reset, 1)
        for _ in range(6):
            _, _, pulse = await ctx.tick().sample(dut.config_event)
            assert not pulse
        assert await r.status() == ACK | NEEDS

    run(dut, bench)


def test_config_generation_and_config_event():
    dut = make()

    async def bench(ctx):
        r = Regs(ctx, dut)

        async def change():
            ctx.set(dut.config_changed, 1)
            _, _, pulse = await ctx.tick().sample(dut.config_event)
            ctx.set(dut.config_changed, 0)
            return pulse

        before = await r.rd(CommonCfg.CONFIG_GENERATION)
        assert await change() == 0, "no notification before DRIVER_OK (driver not running)"
        after = await r.rd(CommonCfg.CONFIG_GENERATION)
        assert after != before, "config_generation changes with the configuration"
        await r.set_features(feature_mask(Feature.VERSION_1))
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK | DOK)
        assert await change() == 1
        assert await r.rd(CommonCfg.CONFIG_GENERATION) == (after + 1) & 0xFF

    run(dut, bench)


def test_msix_vector_mapping():
    """Vectors below the table size map; others fail and read NO_VECTOR (§4.1.5.1.2)."""
    dut = make()

    async def bench(ctx):
        r = Regs(ctx, dut)
        for value, want in ((0, 0), (VECTORS - 1, VECTORS - 1), (VECTORS, VIRTIO_MSI_NO_VECTOR),
                            (0x7FF, VIRTIO_MSI_NO_VECTOR), (VIRTIO_MSI_NO_VECTOR,
                                                             VIRTIO_MSI_NO_VECTOR)):
            await r.wr(CommonCfg.CONFIG_MSIX_VECTOR, value)
            assert await r.rd(CommonCfg.CONFIG_MSIX_VECTOR) == want
            assert ctx.get(dut.config_vector) == want
            await r.wr(CommonCfg.QUEUE_SELECT, 1)
            await r.wr(CommonCfg.QUEUE_MSIX_VECTOR, value)
            assert await r.rd(CommonCfg.QUEUE_MSIX_VECTOR) == want
            assert ctx.get(dut.queue_vector[1]) == want
        assert ctx.get(dut.queue_vector[0]) == VIRTIO_MSI_NO_VECTOR

    run(dut, bench)


def test_queue_registers():
    rng = random.Random(seed())
    dut = make()

    async def bench(ctx):
        r = Regs(ctx, dut)
        written = {}
        for q in range(NQ):
            await r.wr(CommonCfg.QUEUE_SELECT, q)
            assert await r.rd(CommonCfg.QUEUE_SIZE) == MAX_SIZE, "maximum after reset"
            assert await r.rd(CommonCfg.QUEUE_ENABLE) == 0
            assert await r.rd(CommonCfg.QUEUE_NOTIFY_OFF) == q
            assert await r.rd(CommonCfg.QUEUE_MSIX_VECTOR) == VIRTIO_MSI_NO_VECTOR
            size = 1 << rng.randrange(0, 8)
            await r.wr(CommonCfg.QUEUE_SIZE, size)
            for bad in (0, 3, size + 1 if size > 1 else 6, MAX_SIZE * 2, 0xFFFF):
                await r.wr(CommonCfg.QUEUE_SIZE, bad)
                assert await r.rd(CommonCfg.QUEUE_SIZE) == size, f"size {bad} refused"
            areas = {off: rng.getrandbits(64) & ~0xF for off in
                     (CommonCfg.QUEUE_DESC, CommonCfg.QUEUE_DRIVER, CommonCfg.QUEUE_DEVICE)}
            for off, value in areas.items():
                await r.wr(off, value)
                assert await r.rd(off) == value
            written[q] = (size, areas)
        # A queue that does not exist: size 0 ("unavailable"), everything 0, writes ignored.
        await r.wr(CommonCfg.QUEUE_SELECT, NQ)
        assert await r.rd(CommonCfg.QUEUE_SELECT) == NQ
        for off in (CommonCfg.QUEUE_SIZE, CommonCfg.QUEUE_MSIX_VECTOR, CommonCfg.QUEUE_ENABLE,
                    CommonCfg.QUEUE_NOTIFY_OFF, CommonCfg.QUEUE_DESC, CommonCfg.QUEUE_DRIVER,
                    CommonCfg.QUEUE_DEVICE):
            assert await r.rd(off) == 0
        await r.wr(CommonCfg.QUEUE_ENABLE, 1)
        assert await r.rd(CommonCfg.QUEUE_ENABLE) == 0
        # Enable queue 1: its layout becomes read-only, its vector stays writable.
        await r.wr(CommonCfg.QUEUE_SELECT, 1)
        await r.wr(CommonCfg.QUEUE_ENABLE, 0)       # refused (§4.1.4.3.2)
        assert await r.rd(CommonCfg.QUEUE_ENABLE) == 0
        await r.wr(CommonCfg.QUEUE_ENABLE, 1)
        assert await r.rd(CommonCfg.QUEUE_ENABLE) == 1
        size, areas = written[1]
        await r.wr(CommonCfg.QUEUE_SIZE, 1 if size != 1 else 2)
        for off in areas:
            await r.wr(off, 0x1000)
        await r.wr(CommonCfg.QUEUE_ENABLE, 0)
        assert await r.rd(CommonCfg.QUEUE_SIZE) == size
        assert await r.rd(CommonCfg.QUEUE_ENABLE) == 1
        for off, value in areas.items():
            assert await r.rd(off) == value, "read-only once enabled"
        await r.wr(CommonCfg.QUEUE_MSIX_VECTOR, 2)
        assert await r.rd(CommonCfg.QUEUE_MSIX_VECTOR) == 2
        # Byte-wise access to a 16-bit field merges bytes; a partial size is checked whole.
        await r.wr(CommonCfg.QUEUE_SELECT, 2)
        await bus_write(ctx, dut.bus, CommonCfg.QUEUE_SIZE // 4, 0x0000_0040, be=0b0001)
        assert await r.rd(CommonCfg.QUEUE_SIZE) == 0x40
        # The engine sees exactly what was programmed.
        for q, (size, areas) in written.items():
            cfg = ctx.get(dut.queue_config[q])
            assert cfg.size == (0x40 if q == 2 else size)
            assert cfg.enable == (q == 1)
            assert (cfg.desc, cfg.driver, cfg.device) == tuple(areas.values())

    counts = run(dut, bench)
    # Refused: 5 bad sizes per queue, queue_enable of a missing queue, queue_enable 0 twice,
    # and size + 3 x 2 area halves of the enabled queue.
    assert counts["write_ignored"] == 5 * NQ + 1 + 2 + 1 + 6


def test_reset_handshake():
    """Status 0: engine and backend reset until idle; status reads the old value and writes
    are dropped meanwhile; then every register is back to its reset value (§4.1.4.3.1)."""
    dut = make()

    async def bench(ctx):
        r = Regs(ctx, dut)
        ctx.set(dut.idle, 1)        # held in reset before DRIVER_OK: idle
        assert ctx.get(dut.engine_reset) and not ctx.get(dut.backend_reset)
        await r.set_features(feature_mask(Feature.VERSION_1, Feature.IN_ORDER))
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK)
        await r.wr(CommonCfg.QUEUE_SELECT, 2)
        await r.wr(CommonCfg.QUEUE_SIZE, 16)
        await r.wr(CommonCfg.QUEUE_DESC, 0x1234_5670)
        await r.wr(CommonCfg.QUEUE_MSIX_VECTOR, 1)
        await r.wr(CommonCfg.QUEUE_ENABLE, 1)
        await r.wr(CommonCfg.CONFIG_MSIX_VECTOR, 0)
        await r.wr(CommonCfg.DEVICE_STATUS, ACK | DRV | FOK | DOK)
        assert not ctx.get(dut.engine_reset)
        ctx.set(dut.idle, 0)        # running: idle is low until the engine drains

        await r.wr(CommonCfg.DEVICE_STATUS, 0)
        running = ACK | DRV | FOK | DOK
        for _ in range(20):
            assert ctx.get(dut.engine_reset) and ctx.get(dut.backend_reset)
            assert not ctx.get(dut.driver_ok)
            assert await r.status() == running, "status reads non-zero until the reset is done"
        # A write during the reset is acknowledged in its second clock, as every write,
        # counted once and dropped.
        ctx.set(dut.bus.valid, 1)
        ctx.set(dut.bus.write, 1)
        ctx.set(dut.bus.addr, CommonCfg.QUEUE_SELECT // 4)
        ctx.set(dut.bus.be, 0b1100)
        ctx.set(dut.bus.w_data, 1 << 16)
        assert not ctx.get(dut.bus.ack) and not ctx.get(dut.events.write_ignored)
        await ctx.tick()
        assert ctx.get(dut.bus.ack) and ctx.get(dut.events.write_ignored)
        await ctx.tick()
        ctx.set(dut.bus.valid, 0)
        ctx.set(dut.idle, 1)
        pulses = 0
        for _ in range(4):
            _, _, pulse = await ctx.tick().sample(dut.device_reset)
            pulses += pulse
        assert pulses == 1
        assert await r.status() == 0
        assert not ctx.get(dut.backend_reset) and ctx.get(dut.engine_reset)
        assert await r.rd(CommonCfg.QUEUE_SELECT) == 0, "a write during the reset was dropped"
        assert await r.rd(CommonCfg.CONFIG_MSIX_VECTOR) == VIRTIO_MSI_NO_VECTOR
        await r.wr(CommonCfg.QUEUE_SELECT, 2)
        assert await r.rd(CommonCfg.QUEUE_SIZE) == MAX_SIZE
        assert await r.rd(CommonCfg.QUEUE_ENABLE) == 0
        assert await r.rd(CommonCfg.QUEUE_DESC) == 0
        assert await r.rd(CommonCfg.QUEUE_MSIX_VECTOR) == VIRTIO_MSI_NO_VECTOR
        await r.wr(CommonCfg.DRIVER_FEATURE_SELECT, 1)
        assert await r.rd(CommonCfg.DRIVER_FEATURE) == 0
        assert ctx.get(dut.queue_config[2]).enable == 0

        # Not running: the engine is already idle, the reset takes two cycles (a read in
        # between still sees the old status).
        await r.wr(CommonCfg.DEVICE_STATUS, ACK)
        await r.wr(CommonCfg.DEVICE_STATUS, 0)
        reads = [await r.status() for _ in range(3)]
        assert reads[-1] == 0 and reads.index(0) <= 1, reads

    run(dut, bench)
