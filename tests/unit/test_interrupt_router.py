"""InterruptRouter: queue notifications to the queue's MSI-X vector or ISR bit 0,
configuration changes to ISR bit 1 plus config_msix_vector (virtio 1.2 §4.1.4.5.1,
§4.1.5.1.2); NO_VECTOR sends nothing."""
import random

import pytest
from amaranth.sim import Simulator

from hdl.virtio.interrupt_router import InterruptRouter
from hdl.virtio.spec import VIRTIO_MSI_NO_VECTOR
from tests.unit.sim_streams import seed

NQ = 4
NO = VIRTIO_MSI_NO_VECTOR


def expected_route(msix_enable, vectors, config_vector, events):
    """The spec's routing, event by event: ('msix', vector) or ('isr', bit)."""
    out = []
    for kind, q in events:
        if kind == "config":
            out.append(("isr", 1))
            if msix_enable and config_vector != NO:
                out.append(("msix", config_vector))
        elif not msix_enable:
            out.append(("isr", 0))
        elif vectors[q] != NO:
            out.append(("msix", vectors[q]))
    return out


@pytest.mark.parametrize("msix_enable", [True, False])
def test_interrupt_router(msix_enable):
    rng = random.Random(seed())
    dut = InterruptRouter(num_queues=NQ, msix_vectors=8)
    vectors = [3, NO, 0, 7]
    config_vector = 5
    events = [("config", None) if rng.random() < 0.15 else ("queue", rng.randrange(NQ))
              for _ in range(150)]
    got = []

    async def source(ctx):
        ctx.set(dut.msix_enable, msix_enable)
        ctx.set(dut.config_vector, config_vector)
        for q, v in enumerate(vectors):
            ctx.set(dut.queue_vector[q], v)
        for kind, q in events:
            if kind == "config":
                ctx.set(dut.config_event, 1)
                await ctx.tick()
                ctx.set(dut.config_event, 0)
                # Let the config message leave before the next queue event so that the
                # order of the two kinds is the order of the events.
                await ctx.tick().repeat(3)
            else:
                ctx.set(dut.notify.payload, q)
                ctx.set(dut.notify.valid, 1)
                await ctx.tick().until(dut.notify.ready)
                ctx.set(dut.notify.valid, 0)
            if rng.random() < 0.5:
                await ctx.tick()
        await ctx.tick().repeat(10)

    async def sink(ctx):
        async for _, _, valid, vector, isr in ctx.tick().sample(
                dut.msix.valid, dut.msix.payload, dut.isr_set):
            ctx.set(dut.msix.ready, 1)
            # A message offered now is for an earlier event than an ISR bit set now.
            if valid:
                got.append(("msix", vector))
            if isr & 2:
                got.append(("isr", 1))
            if isr & 1:
                got.append(("isr", 0))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_process(sink)
    sim.run()
    assert got == expected_route(msix_enable, vectors, config_vector, events)


def test_config_message_waits_and_reset_forgets_it():
    dut = InterruptRouter(num_queues=NQ, msix_vectors=8)

    async def tb(ctx):
        ctx.set(dut.msix_enable, 1)
        ctx.set(dut.config_vector, 2)
        ctx.set(dut.queue_vector[1], 6)
        ctx.set(dut.msix.ready, 0)
        ctx.set(dut.config_event, 1)
        await ctx.tick()
        ctx.set(dut.config_event, 0)
        await ctx.tick()
        assert ctx.get(dut.msix.valid) and ctx.get(dut.msix.payload) == 2
        # A queue notification waits behind the held message.
        ctx.set(dut.notify.valid, 1)
        ctx.set(dut.notify.payload, 1)
        for _ in range(5):
            await ctx.tick()
            assert not ctx.get(dut.notify.ready)
        # Once the message is taken, the notification follows and its message is held.
        ctx.set(dut.msix.ready, 1)
        await ctx.tick().until(dut.notify.ready)
        ctx.set(dut.notify.valid, 0)
        ctx.set(dut.msix.ready, 0)
        await ctx.tick()
        assert ctx.get(dut.msix.valid) and ctx.get(dut.msix.payload) == 6
        # A configuration message that could not be offered yet is forgotten by the reset.
        ctx.set(dut.config_event, 1)
        await ctx.tick()
        ctx.set(dut.config_event, 0)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.msix.ready, 1)
        sent = []
        for _ in range(6):
            _, _, valid, vector = await ctx.tick().sample(dut.msix.valid, dut.msix.payload)
            if valid:
                sent.append(vector)
        assert sent == [6], "only the queue message already offered is delivered"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_intx_only_build():
    dut = InterruptRouter(num_queues=NQ, msix_vectors=0)
    assert not hasattr(dut, "msix")

    async def tb(ctx):
        ctx.set(dut.notify.valid, 1)
        ctx.set(dut.notify.payload, 3)
        ctx.set(dut.config_event, 1)
        assert ctx.get(dut.notify.ready) and ctx.get(dut.isr_set) == 0b11

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
