"""End-to-end cocotb tests of the whole RTL virtio-blk device (hdl/top.py) through the root
complex, driven by the Linux-like driver model; see test_blk_device.py.

Expected values come from the golden disk (:class:`sim.driver.GoldenDisk`, updated only by
writes the driver saw succeed), from the virtio-blk golden model (:mod:`sim.model.blk`,
written from virtio 1.2 §5.2.6 and ``docs/robustness.md``) for malformed requests, and from
the spec for the status register; never from the RTL's own outputs.
"""
from __future__ import annotations

import cocotb
from cocotb.triggers import with_timeout

from hdl.virtio.spec import (
    DeviceStatus, Feature, VirtioBlkStatus, VirtioBlkType, feature_mask,
)
from sim.blk_device_tb import BlkDeviceTB, pattern
from sim.driver import BlkRequest, Mix, WorkloadConfig, wait_for
from sim.model.blk import BlkDeviceModel, Disk, encode_request_header

SECTOR = 512
_WRITE = 2                 # VIRTQ_DESC_F_WRITE (virtio 1.2 §2.7.5)
_NEXT = 1
_INDIRECT = 4


def check(result, what: str) -> None:
    assert result.requests, f"{what}: no request ran"
    assert not result.failures, f"{what}: {len(result.failures)} failures, first: " \
                                f"{result.failures[:5]}"


async def started(dut) -> BlkDeviceTB:
    tb = BlkDeviceTB(dut, rx_idle=0.1, tx_backpressure=0.1)
    await tb.start()
    return tb


async def mixes(tb: BlkDeviceTB, *, in_order: bool, depths, requests: int) -> None:
    """Random IN/OUT/FLUSH/GET_ID mixes, 512 B and 4 KiB, scattered buffers at any byte
    alignment, on every queue, at each depth; then the disk read back."""
    blk = tb.driver(in_order=in_order)
    await blk.probe()
    assert blk.has(Feature.IN_ORDER) == in_order
    for qd in depths:
        cfg = WorkloadConfig(requests=requests, queue_depth=qd,
                             mix=Mix(read=0.45, write=0.4, flush=0.05, get_id=0.1),
                             sizes=(512, 4096), scatter=True, buffer_align=1,
                             batch=1 + qd // 8)
        result = await tb.workload(blk).run(cfg)
        check(result, f"in_order={in_order} QD {qd}")
        if in_order and qd >= 8:
            # Completions come back out of order (bank latencies of 32 ns .. 3.2 us), so
            # with IN_ORDER the device batches: fewer used entries than buffers.
            assert result.used_entries < result.buffers, \
                f"QD {qd}: {result.used_entries} used entries for {result.buffers} buffers"
        if not in_order:
            assert result.used_entries == result.buffers
    failures = await tb.verify_disk(blk)
    assert not failures, failures[:5]
    await blk.remove()


@cocotb.test()
async def mix_in_order(dut):
    tb = await started(dut)
    await mixes(tb, in_order=True, depths=[1, 8, 32, 64], requests=90)


@cocotb.test()
async def mix_unordered(dut):
    tb = await started(dut)
    await mixes(tb, in_order=False, depths=[1, 16, 64], requests=90)


@cocotb.test()
async def intx_mix(dut):
    """The INTx build (no MSI-X, 32-bit BAR0): interrupts through the ISR, both paths."""
    tb = await started(dut)
    for in_order in (True, False):
        await mixes(tb, in_order=in_order, depths=[1, 16], requests=40)


# --- malformed and failing requests ----------------------------------------------------------

def _chain(vq, head: int) -> list:
    """The descriptors of the direct chain at ``head``."""
    out, i = [], head
    while True:
        d = vq.ring.desc(i)
        out.append((i, d))
        if not d.flags & _NEXT:
            return out
        i = d.next


async def _mutated(tb: BlkDeviceTB, blk, req: BlkRequest, mutate) -> tuple:
    """Submit ``req`` without a kick, let ``mutate(vq, chain)`` change its descriptors or
    buffers, then kick; return what the golden model says the device must do with the
    element as it now is, and the request once completed."""
    vq = blk.queues[0].vq
    await blk.submit(req, 0, kick=False)
    head = vq.ring.avail_entry((vq.avail_idx_shadow - 1) % vq.size)
    chain = _chain(vq, head)
    mutate(vq, chain)
    chain = _chain(vq, head)
    mem = tb.memory
    readable = b"".join(mem.read(d.addr, d.len) for _, d in chain if not d.flags & _WRITE)
    writable = [(d.addr, d.len) for _, d in chain if d.flags & _WRITE]
    before = {addr: mem.read(addr, n) for addr, n in writable}
    model = BlkDeviceModel(Disk(tb.capacity), serial=tb.params["serial"])
    expected = model.handle(readable, sum(n for _, n in writable))
    await vq.kick()
    await with_timeout(req.wait(), 2, "ms")
    return expected, before, writable


@cocotb.test()
async def malformed_requests(dut):
    """Every row of the virtio-blk table in docs/robustness.md that a chain can reach: the
    status and used length the golden model gives, no write outside the status byte for
    failures, the disk untouched by failed OUTs; the device keeps serving afterwards."""
    tb = await started(dut)
    blk = tb.driver(features_mask=~feature_mask(Feature.INDIRECT_DESC))   # direct chains
    await blk.probe()
    mem = tb.memory
    base = 64                                               # a sector range of this test
    fill = pattern(base, 8, salt=7)
    assert (await blk.write(base, fill)).ok
    tb.golden.write_done(base, fill)

    def set_flags(index, set_=0, clear=0):
        def mutate(vq, chain):
            i, d = chain[index]
            vq.ring.set_desc(i, d._replace(flags=(d.flags | set_) & ~clear))
        return mutate

    def set_len(index, length):
        def mutate(vq, chain):
            i, d = chain[index]
            vq.ring.set_desc(i, d._replace(len=length))
        return mutate

    def header(type_, sector=0):
        def mutate(vq, chain):
            mem.write(chain[0][1].addr, encode_request_header(type_, sector))
        return mutate

    cases = [
        ("header device-writable", BlkRequest(VirtioBlkType.IN, base, length=512),
         set_flags(0, set_=_WRITE)),
        ("short header", BlkRequest(VirtioBlkType.IN, base, length=512), set_len(0, 8)),
        ("IN with readable data", BlkRequest(VirtioBlkType.IN, base, length=512),
         set_flags(1, clear=_WRITE)),
        ("OUT with writable data", BlkRequest(VirtioBlkType.OUT, base, data=bytes(512)),
         set_flags(1, set_=_WRITE)),
        ("status not writable", BlkRequest(VirtioBlkType.OUT, base, data=bytes(512)),
         set_flags(2, clear=_WRITE)),
        ("unsupported type", BlkRequest(VirtioBlkType.FLUSH), header(99)),
        ("discard not offered", BlkRequest(VirtioBlkType.FLUSH),
         header(VirtioBlkType.DISCARD)),
        ("legacy FLUSH_OUT", BlkRequest(VirtioBlkType.FLUSH), header(5)),
        ("IN past the capacity", BlkRequest(VirtioBlkType.IN, 0, length=1024),
         header(VirtioBlkType.IN, tb.capacity - 1)),
        ("OUT past the capacity", BlkRequest(VirtioBlkType.OUT, 0, data=bytes(512)),
         header(VirtioBlkType.OUT, tb.capacity)),
        ("IN near 2^64", BlkRequest(VirtioBlkType.IN, 0, length=512),
         header(VirtioBlkType.IN, (1 << 64) - 1)),
        ("IN length not a multiple of 512", BlkRequest(VirtioBlkType.IN, base, length=1024),
         set_len(1, 1000)),
        ("FLUSH with data", BlkRequest(VirtioBlkType.IN, base, length=512),
         header(VirtioBlkType.FLUSH)),
        ("GET_ID of 512 bytes", BlkRequest(VirtioBlkType.IN, base, length=512),
         header(VirtioBlkType.GET_ID)),
    ]
    for name, req, mutate in cases:
        expected, before, writable = await _mutated(tb, blk, req, mutate)
        assert expected.status in (VirtioBlkStatus.IOERR, VirtioBlkStatus.UNSUPP, None), \
            f"{name}: the case does not test a failure ({expected})"
        if expected.status is None:
            # No device-writable byte: nothing written, used length 0.
            assert req.used_len == 0, f"{name}: used length {req.used_len}"
        else:
            assert req.status == expected.status, \
                f"{name}: status {req.status}, expected {expected.status.name}"
            assert req.used_len == expected.written_len, \
                f"{name}: used length {req.used_len}, expected {expected.written_len}"
        # A failure writes the status byte and nothing else.
        status_addr = writable[-1][0] + writable[-1][1] - 1 if writable else None
        for addr, n in writable:
            now = mem.read(addr, n)
            if expected.status is not None and addr + n - 1 == status_addr:
                now, was = now[:-1], before[addr][:-1]
            else:
                was = before[addr]
            assert now == was, f"{name}: the device wrote a buffer at {addr:#x}"
        tb.log.info("%s: %s, used length %s", name, req.status, req.used_len)
    # The disk still holds what was written before, and the device serves normally.
    got = await blk.read(base, len(fill))
    assert got.ok and got.result == fill, "the malformed OUTs changed the disk"
    status = await blk.driver.transport.get_status()
    assert not status & DeviceStatus.DEVICE_NEEDS_RESET, f"status {status:#x}"
    check(await tb.workload(blk).run(WorkloadConfig(requests=40, queue_depth=8)),
          "after the malformed requests")
    await blk.remove()


@cocotb.test()
async def needs_reset_and_recovery(dut):
    """A chain the virtqueue engine must refuse (INDIRECT without INDIRECT_DESC) sets
    DEVICE_NEEDS_RESET with a configuration interrupt; a device reset with requests in
    flight recovers, and the golden disk still matches."""
    tb = await started(dut)
    blk = tb.driver(features_mask=~feature_mask(Feature.INDIRECT_DESC))
    await blk.probe()
    check(await tb.workload(blk).run(WorkloadConfig(requests=30, queue_depth=8)), "before")
    vq = blk.queues[0].vq
    req = BlkRequest(VirtioBlkType.FLUSH)
    await blk.submit(req, 0, kick=False)
    head = vq.ring.avail_entry((vq.avail_idx_shadow - 1) % vq.size)
    d = vq.ring.desc(head)
    vq.ring.set_desc(head, d._replace(flags=d.flags | _INDIRECT))
    await vq.kick()
    await wait_for(lambda: blk.irq_stats.config >= 1, timeout_ns=200_000)
    status = await blk.driver.transport.get_status()
    assert status & DeviceStatus.DEVICE_NEEDS_RESET, f"status {status:#x}"
    assert not req.done
    assert await blk.reset_device() >= 1 and req.aborted
    status = await blk.driver.transport.get_status()
    assert not status & DeviceStatus.DEVICE_NEEDS_RESET, f"status {status:#x}"
    # Reset in the middle of traffic: requests the device returned complete, others abort.
    workload = tb.workload(blk)
    task = cocotb.start_soon(workload.run(WorkloadConfig(requests=200, queue_depth=32)))
    await wait_for(lambda: sum(blk.stats.completed.values()) >= 60, timeout_ns=1_000_000)
    in_flight = sum(q.vq.outstanding for q in blk.queues)
    aborted = await blk.reset_device(reinit=False)
    assert await blk.driver.transport.get_status() == 0
    assert 0 < aborted <= in_flight, f"{aborted} aborted of {in_flight} in flight"
    await blk.probe()
    result = await task
    assert not result.failures, result.failures[:5]
    check(await tb.workload(blk).run(WorkloadConfig(requests=60, queue_depth=16)),
          "after the reset")
    failures = await tb.verify_disk(blk)
    assert not failures, failures[:5]
    await blk.remove()
