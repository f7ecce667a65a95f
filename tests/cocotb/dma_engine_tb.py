"""cocotb scenarios for DmaEngine (run by tests/cocotb/test_dma_engine.py).

Each test builds a DmaHarness over a PcieHost model, states a scenario and lets
DmaHarness.check compare read data, write results and host memory with the model.
"""
import json
import os
import random

import cocotb

from hdl.pcie.dma_port import DmaError
from sim.dma_harness import DmaHarness
from sim.model.pcie_host import Fault, HostMemory, PcieHost

PARAMS = json.loads(os.environ.get("DUT_PARAMS", "{}"))
MB = 1 << 20


def make(dut, rng, **kw):
    host = PcieHost(HostMemory(), rcb=rng.choice([64, 128]),
                    split=rng.choice(["max", "rcb", "random"]), rng=rng)
    dut._log.info("host RCB %d, split %s", host.rcb, host.split)
    return DmaHarness(dut, PARAMS, rng=rng, host=host, **kw)


def stressed(rng):
    """Random back-pressure on every stream."""
    return {k: rng.uniform(0.3, 0.95) for k in
            ("req_ready", "cpl_valid", "rd_cmd", "rd_ready", "wr_cmd", "wr_data", "done_ready")}


def random_addr(rng, region: int, length: int) -> int:
    """An address in a region of its own (channels never share bytes), sometimes above
    4 GiB, often just below a 4 KiB boundary so that the transfer crosses it."""
    high = rng.choice([0, 0, rng.randrange(1, 1 << 12)]) << 32
    base = high | (region << 24) | (rng.randrange(64) << 16)
    kind = rng.random()
    if kind < 0.3:
        off = 4096 - rng.randint(1, min(length, 4095)) if length > 1 else 4095
        off += rng.randrange(8) * 4096
    elif kind < 0.5:
        off = rng.randrange(16) * 4096 + rng.choice([0, 64, 128, 512])
    else:
        off = rng.randrange(1 << 15)
    if high and base + off + length > high + (1 << 32):
        off = 0
    return base + off


def random_length(rng) -> int:
    r = rng.random()
    if r < 0.15:
        return rng.randint(1, 8)
    if r < 0.6:
        return rng.randint(1, 600)
    if r < 0.97:
        return rng.randint(600, 6000)
    return rng.randint(6000, 65536)


def queue_mix(tb, rng, count, reads=True, writes=True):
    for _ in range(count):
        if reads and (not writes or rng.random() < 0.5):
            chan = rng.randrange(tb.nrd)
            length = random_length(rng)
            tb.read(chan, random_addr(rng, chan, length), length)
        else:
            chan = rng.randrange(tb.nwr)
            length = random_length(rng)
            payload = bytes(rng.randrange(256) for _ in range(length))
            tb.write(chan, random_addr(rng, 16 + chan, length), payload)


@cocotb.test()
async def random_traffic(dut):
    """Reads and writes of random size, alignment and address (4 KiB crossings, above
    4 GiB) on every channel, with completion reordering, RCB splits, random latency, small
    credit pools and back-pressure everywhere; MPS and MRRS change between phases."""
    rng = random.Random()
    tb = make(dut, rng, p=stressed(rng), latency=(5, 300),
              credits=dict(ph=rng.randint(1, 8), pd=rng.randint(64, 200), nph=rng.randint(1, 6)),
              credit_delay=rng.randint(1, 40))
    await tb.start()
    for phase in range(3):
        mps, mrrs = rng.randrange(4), rng.randrange(6)
        tb.set_ctrl(max_payload_size=mps, max_read_request_size=mrrs)
        dut._log.info("phase %d: MPS %d, MRRS %d, credits %s", phase, 128 << mps,
                      128 << mrrs, tb.credits)
        queue_mix(tb, rng, int(os.environ.get("DMA_CMDS", "60")))
        await tb.run(max_cycles=400_000)
        tb.check()
    dut._log.info("%d reads, %d writes; MemRd %d (%d answered in pieces), MemWr %d; "
                  "%d completions overtook older requests; max credits in flight %s",
                  len(tb.rd_done), len(tb.wr_done_list), tb.req_count["rd"], tb.split_reads,
                  tb.req_count["wr"], tb.overtaken, tb.max_in_flight)
    assert tb.overtaken > 0, "no completion reordering was exercised"
    if tb.host.split != "max":
        assert tb.split_reads > 0, "no read was answered in pieces"
    assert len(tb.rd_done) + len(tb.wr_done_list) == 3 * int(os.environ.get("DMA_CMDS", "60"))
    st = tb.status()
    assert st == dict(cpl_discarded=0, cpl_timeouts=0, cpl_errors=0), st


@cocotb.test()
async def completion_errors(dut):
    """UR, CA, CRS and poisoned completions and lost ones (timeouts, some coming back late):
    the command fails with the right error, failed parts read as zero, good ones intact,
    late completions are discarded and counted, tags are not reused too early."""
    rng = random.Random()
    faults = {Fault.UR: 0.05, Fault.CA: 0.05, Fault.CRS: 0.03, Fault.POISONED: 0.05,
              Fault.LOST: 0.05}
    tb = make(dut, rng, p=stressed(rng), latency=(5, 200), faults=faults, late=0.6)
    await tb.start()
    tb.set_ctrl(max_payload_size=rng.randrange(2), max_read_request_size=rng.randrange(4))
    for chan in range(tb.nrd):
        for _ in range(40):
            length = rng.choice([rng.randint(1, 64), rng.randint(64, 3000)])
            tb.read(chan, random_addr(rng, chan, length), length)
    await tb.run(max_cycles=3 * tb.timeout + 300_000)
    # let late completions arrive (they come 1.25 timeouts after their request)
    await tb.run(cycles=tb.timeout * 3 // 2)
    tb.check()
    failed = [c for c in tb.rd_done if c.error != DmaError.NONE]
    dut._log.info("%d of %d reads failed; expected timeouts %d, errors %d, late %d; %s",
                  len(failed), len(tb.rd_done), tb.expect_timeouts, tb.expect_cpl_errors,
                  tb.expect_late, tb.status())
    assert failed, "no fault was injected: raise the fault rates"
    st = tb.status()
    assert st["cpl_timeouts"] == tb.expect_timeouts
    assert st["cpl_errors"] == tb.expect_cpl_errors
    assert st["cpl_discarded"] == tb.expect_late
    # the engine still works after all that
    tb.faults = {}
    for chan in range(tb.nrd):
        tb.read(chan, random_addr(rng, chan, 2000), 2000)
    await tb.run(max_cycles=100_000)
    tb.check()


@cocotb.test()
async def bus_master_off_and_bad_length(dut):
    """With Bus Master Enable clear nothing is sent and every command ends with
    NO_BUS_MASTER; lengths 0 and above 64 KiB are refused; then BME on works again."""
    rng = random.Random()
    tb = make(dut, rng, p=stressed(rng), latency=(5, 100))
    await tb.start()
    tb.set_ctrl(bus_master_en=0)
    queue_mix(tb, rng, 20)
    for chan in range(tb.nrd):
        tb.read(chan, 0x1000, 0)
        tb.read(chan, 0x1000, 70000)
    for chan in range(tb.nwr):
        tb.write(chan, 0x2000, b"", 0)
        tb.write(chan, 0x2000, bytes(70000))
    await tb.run(max_cycles=200_000)
    assert tb.req_count == dict(rd=0, wr=0), tb.req_count
    tb.check()
    tb.set_ctrl(bus_master_en=1)
    queue_mix(tb, rng, 20)
    await tb.run(max_cycles=200_000)
    tb.check()
    assert tb.req_count["rd"] + tb.req_count["wr"] > 0


@cocotb.test()
async def extended_tags(dut):
    """Many small reads outstanding: with Extended Tag enabled tags above 31 are used (when
    the engine has them), without it never (the harness checks every MemRd's tag)."""
    rng = random.Random()
    tb = make(dut, rng, latency=(400, 600))
    await tb.start()
    used = set()
    for ext in (0, 1):
        tb.set_ctrl(ext_tag_en=ext)
        for k in range(120):
            chan = k % tb.nrd
            tb.read(chan, random_addr(rng, chan, 64), 64)
        while tb.busy():
            await tb.step()
            used |= {t for t, n in tb.tag_busy.items() if n}
        tb.check()
        dut._log.info("ext_tag_en=%d: tags used %d, highest %d", ext, len(used), max(used))
        if not ext:
            assert max(used) < 32
    if PARAMS["tags"] > 32:
        assert max(used) >= 32, "Extended Tag enabled but no tag above 31 used"


@cocotb.test()
async def single_channel_throughput(dut):
    """One read channel with 1 us of completion latency (125 clocks) keeps the data path
    busy; one write channel streams a beat per clock."""
    rng = random.Random()
    tb = make(dut, rng, latency=(125, 125))
    tb.host.split = "max"
    await tb.start()
    tb.set_ctrl(max_payload_size=1, max_read_request_size=2)   # 256 / 512
    total = 32768
    for k in range(total // 4096):
        tb.read(0, 0x10000 + k * 4096, 4096)
    await tb.run(max_cycles=100_000)
    tb.check()
    t0 = min(c.t_cmd for c in tb.rd_done)
    t1 = max(c.t_done for c in tb.rd_done)
    rd_eff = total / ((t1 - t0) * tb.B)
    for k in range(total // 4096):
        tb.write(0, (16 << 24) + k * 4096, bytes(rng.randrange(256) for _ in range(4096)))
    await tb.run(max_cycles=100_000)
    tb.check()
    t0 = min(c.t_cmd for c in tb.wr_done_list)
    t1 = max(c.t_done for c in tb.wr_done_list)
    wr_eff = total / ((t1 - t0) * tb.B)
    dut._log.info("read %.3f, write %.3f of the data path (%d bytes per clock)",
                  rd_eff, wr_eff, tb.B)
    assert rd_eff >= 0.9, f"read throughput {rd_eff:.3f} of the data path"
    assert wr_eff >= 0.9, f"write throughput {wr_eff:.3f} of the data path"
