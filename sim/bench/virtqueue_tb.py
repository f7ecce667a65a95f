"""cocotb side of ``python -m sim.bench.virtqueue``: runs the measurements it is told to.

The command line hands a JSON list of measurement settings in ``VQ_BENCH_PLAN`` and a file
name in ``VQ_BENCH_OUT``; each measurement runs a queue through
:class:`~sim.virtqueue_tb.VirtqueueTB` (so the golden model's checker judges every run), then
counts what crossed the DMA ports. A device reset separates measurements.
"""
import json
import os

import cocotb

from sim.dma_port_model import Timing, tlp_count
from sim.virtqueue_tb import VirtqueueTB, Workload

CONTROL_READS = ("ring_rd", "desc_rd")
CONTROL_WRITES = ("ctl_wr",)


def _linux_policy(driver):
    """Ask for a notification at the next used buffer (virtqueue_enable_cb)."""
    if driver.tb.event_idx:
        driver.rd.set_used_event(driver.checker.used_idx)


async def _measure(tb: VirtqueueTB, m: dict) -> dict:
    shape = tuple((length, bool(write)) for length, write in m["shape"])
    workload = Workload(requests=m["requests"], queue_depth=m["qd"], shape=shape)
    tb.configure(in_order=m["in_order"], event_idx=m["event_idx"], indirect=False,
                 sizes=[m["queue_size"]], workloads=[workload])
    tb.driver_policy = _linux_policy
    tb.backend.delay = tuple(m["backend_delay"])
    tb.backend.elem_ready = 1.0
    tb.notify_ready = 1.0
    low, high = m["dma_latency"]
    tb.dma.set_timing(Timing(latency=(low, high), cmd_ready=1.0, data_valid=1.0,
                             data_ready=1.0, max_outstanding=64))
    first_read, first_write = len(tb.dma.reads), len(tb.dma.writes)
    stats_before = tb.stats()
    start = tb.dma.cycle
    await tb.run_traffic(timeout=m["requests"] * 400 + 20_000)
    driver = tb.queues[0]
    end = driver.dispatch_cycles[-1]
    report = tb.finish()[0]
    reads = [r for r in tb.dma.reads[first_read:] if r.channel in CONTROL_READS]
    writes = [w for w in tb.dma.writes[first_write:] if w.channel in CONTROL_WRITES]
    stats = {k: v - stats_before[k] for k, v in tb.stats().items()}
    notifications = report.notifications
    mrrs, mps = m["mrrs"], m["mps"]
    read_tlps = sum(tlp_count(r.addr, r.length, mrrs) for r in reads)
    write_tlps = sum(tlp_count(w.addr, len(w.data), mps) for w in writes)
    n = m["requests"]
    # Steady state: the middle half of the dispatches.
    cycles = driver.dispatch_cycles
    a, b = n // 4, 3 * n // 4
    steady = (b - a) / max(1, cycles[b] - cycles[a])
    result = dict(m)
    result.update({
        "control_reads": len(reads),
        "control_writes": len(writes),
        "notifications": notifications,
        "control_commands_per_request": (len(reads) + len(writes) + notifications) / n,
        "control_tlps_per_request": (read_tlps + write_tlps + notifications) / n,
        "elements_per_clock": steady,
        "cycles": end - start,
        "mean_run_length": report.mean_run_length,
        "stats": stats,
    })
    await tb.device_reset()
    return result


@cocotb.test()
async def bench(dut):
    plan = json.loads(os.environ["VQ_BENCH_PLAN"])
    tb = VirtqueueTB(dut)
    await tb.start()
    results = []
    for measurement in plan:
        results.append(await _measure(tb, measurement))
        dut._log.info("measured %s", {k: results[-1][k] for k in (
            "qd", "in_order", "control_tlps_per_request", "elements_per_clock")})
    with open(os.environ["VQ_BENCH_OUT"], "w") as f:
        json.dump(results, f)
