"""cocotb side of ``python -m sim.bench.dma``: runs the measurements the command line asks for.

The plan comes as JSON in ``BENCH_PLAN`` (a list of measurements), the results go to the
JSON file named by ``BENCH_OUT``. Each measurement resets the engine, puts a link model
(:class:`sim.model.pcie_link.Wire`, one per direction) between the engine and the host model,
and keeps one client channel busy with back-to-back commands of one size.
"""
import json
import os
import random

import cocotb

from sim.dma_harness import DmaHarness
from sim.model.pcie_host import HostMemory, PcieHost
from sim.model.pcie_link import LINKS, Wire

PARAMS = json.loads(os.environ.get("DUT_PARAMS", "{}"))
CLOCK_HZ = 125e6
MPS_CODE = {128: 0, 256: 1, 512: 2, 1024: 3}
MRRS_CODE = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}


async def measure(dut, m: dict, first: bool) -> dict:
    rng = random.Random(1)
    link = LINKS[m["link"]]
    host = PcieHost(HostMemory(), rcb=64, max_payload=m["mps"], max_read_request=m["mrrs"],
                    split="max", rng=rng)
    latency = round(m["latency_us"] * 1e-6 * CLOCK_HZ)
    # A root port's posted/non-posted buffers; credits come back when the host has taken
    # the TLP plus 0.25 us for the UpdateFC DLLP.
    tb = DmaHarness(dut, PARAMS, rng=rng, host=host, latency=(latency, latency),
                    credits=dict(ph=32, pd=512, nph=32), credit_delay=31,
                    link=(Wire(link, CLOCK_HZ), Wire(link, CLOCK_HZ)), tx_buffer=2048)
    await tb.start(clock=first)
    tb.set_ctrl(max_payload_size=MPS_CODE[m["mps"]], max_read_request_size=MRRS_CODE[m["mrrs"]])
    size = m["size"]
    count = max(2, m["total"] // size)
    base = 0x1_0000_0000 if m.get("above_4g") else 0x100000
    payload = bytes(rng.randrange(256) for _ in range(size))
    for k in range(count):
        addr = base + k * max(size, 4096)
        if m["direction"] == "read":
            tb.read(0, addr, size)
        else:
            tb.write(0, addr, payload)
    await tb.run(max_cycles=4_000_000)
    tb.check()
    total = count * size
    if m["direction"] == "read":
        # Sustained rate: from the end of the first command to the end of the last, so the
        # one-time latency of the first request is not counted as lost bandwidth.
        done = sorted(c.t_done for c in tb.rd_done)
        if count > 1:
            t0, total = done[0], (count - 1) * size
        else:
            t0 = tb.rd_done[0].t_cmd
        t1 = done[-1]
    else:
        t0 = min(c.t_cmd for c in tb.wr_done_list)
        t1 = tb.last_host_write
    clocks = t1 - t0
    return dict(m, count=count, clocks=clocks, bytes_per_clock=total / clocks)


@cocotb.test()
async def bench(dut):
    plan = json.loads(os.environ["BENCH_PLAN"])
    results = []
    for i, m in enumerate(plan):
        r = await measure(dut, m, first=(i == 0))
        dut._log.info("%s", r)
        results.append(r)
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(results, f)
