"""Amaranth-simulator tests of hdl/blk/ram_disk.py.

A testbench plays the request engine on the storage port (commands with tags, WRITE data
in command order, random back-pressure on ``rd_data`` and ``done``) and compares with a
plain byte-array disk: initial contents, reads across stripe and bank boundaries, writes
read back, per-bank latencies making later commands overtake earlier ones, FLUSH after
every earlier WRITE, and the bank mapping of :func:`bank_location`.
"""
import random

import pytest
from amaranth.sim import Simulator

from hdl.blk.ram_disk import RamDisk, bank_location, bank_of
from hdl.blk.storage_port import StorageOp
from tests.unit.sim_streams import seed

SECTOR = 512


class StoragePortTB:
    """Drives a storage port: ``issue`` queues commands; three coroutines move them."""

    def __init__(self, dut, rng: random.Random, width: int):
        self.dut = dut
        self.rng = rng
        self.nbytes = width // 8
        self.commands: list[tuple] = []         # (op, tag, sector, count, data)
        self.write_data: list[bytes] = []       # in command order
        self.taken: list[tuple[int, int]] = []  # (cycle, tag) of each command taken
        self.reads: dict[int, tuple[int, bytes]] = {}       # tag -> (cycle done, bytes)
        self.dones: dict[int, int] = {}                     # tag -> cycle
        self.order: list[int] = []              # tags in completion order
        self.cycle = 0
        self.ready_p = 0.8

    def issue(self, op: StorageOp, tag: int, sector: int = 0, count: int = 0,
              data: bytes = b""):
        self.commands.append((op, tag, sector, count, data))

    def barrier(self):
        """Issue nothing more until every command so far has completed (commands that
        overlap and are outstanding together complete in an unspecified order)."""
        self.commands.append(None)

    async def clock(self, ctx):
        while True:
            await ctx.tick()
            self.cycle += 1

    async def commander(self, ctx):
        st = self.dut.storage
        for command in self.commands:
            if command is None:
                ctx.set(st.cmd.valid, 0)
                while len(self.reads) + len(self.dones) < len(self.taken):
                    await ctx.tick()
                continue
            op, tag, sector, count, data = command
            ctx.set(st.cmd.payload, {"op": op, "tag": tag, "sector": sector, "count": count})
            ctx.set(st.cmd.valid, 1)
            await ctx.tick().until(st.cmd.ready)
            self.taken.append((self.cycle, tag))
            if op == StorageOp.WRITE:
                self.write_data.append(data)
        ctx.set(st.cmd.valid, 0)

    async def writer(self, ctx):
        st = self.dut.storage
        sent = 0
        while True:
            if sent < len(self.write_data):
                data = self.write_data[sent]
                for k in range(0, len(data), self.nbytes):
                    while self.rng.random() < 0.2:
                        ctx.set(st.wr_data.valid, 0)
                        await ctx.tick()
                    ctx.set(st.wr_data.payload, {
                        "data": int.from_bytes(data[k:k + self.nbytes], "little"),
                        "last": k + self.nbytes == len(data)})
                    ctx.set(st.wr_data.valid, 1)
                    await ctx.tick().until(st.wr_data.ready)
                ctx.set(st.wr_data.valid, 0)
                sent += 1
            else:
                await ctx.tick()

    async def receiver(self, ctx):
        st = self.dut.storage
        burst = bytearray()
        burst_tag = None
        while True:
            r_ready = self.rng.random() < self.ready_p
            d_ready = self.rng.random() < self.ready_p
            ctx.set(st.rd_data.ready, r_ready)
            ctx.set(st.done.ready, d_ready)
            _, _, rv, rp, dv, dp = await ctx.tick().sample(
                st.rd_data.valid, st.rd_data.payload, st.done.valid, st.done.payload)
            if rv and r_ready:
                assert burst_tag in (None, rp.tag), "READ bursts interleaved"
                assert not rp.error
                burst_tag = rp.tag
                burst += rp.data.to_bytes(self.nbytes, "little")
                if rp.last:
                    self.reads[rp.tag] = (self.cycle, bytes(burst))
                    self.order.append(rp.tag)
                    burst = bytearray()
                    burst_tag = None
            if dv and d_ready:
                assert not dp.error
                self.dones[dp.tag] = self.cycle
                self.order.append(dp.tag)

    def run(self, cycles: int):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        for bench in (self.clock, self.commander, self.writer, self.receiver):
            sim.add_testbench(bench, background=bench is not self.commander)
        sim.run_until(cycles * 1e-8)


def test_bank_mapping():
    # Four banks, stripes of 8 sectors: sectors 0..7 bank 0, 8..15 bank 1, ..., 32..39 bank 0.
    assert [bank_of(s, banks=4, stripe=8) for s in (0, 7, 8, 15, 16, 31, 32, 40)] == \
        [0, 0, 1, 1, 2, 3, 0, 1]
    assert bank_location(33, banks=4, stripe=8) == (0, 9)
    assert bank_location(47, banks=4, stripe=8) == (1, 15)
    with pytest.raises(ValueError, match="multiple of banks"):
        RamDisk(capacity=100, banks=4, stripe=8)
    with pytest.raises(ValueError, match="latency"):
        RamDisk(capacity=64, banks=4, stripe=8, latency=(1, 2))


@pytest.mark.parametrize("width", [64, 128])
def test_reads_writes_and_initial_contents(width):
    rng = random.Random(seed())
    capacity = 128
    initial = rng.randbytes(capacity * SECTOR)
    image = bytearray(initial)
    dut = RamDisk(width=width, tag_width=6, capacity=capacity, banks=4, stripe=4,
                  latency=(2, 7, 0, 30), jitter=8, slots=6, init=initial)
    tb = StoragePortTB(dut, rng, width)
    expected_reads = {}
    # Reads of the initial contents, across stripe and bank boundaries; then writes of
    # disjoint ranges, a FLUSH, and reads of everything written. Every tag is used once.
    tag = 0
    for _ in range(12):
        sector = rng.randrange(capacity - 9)
        count = rng.randint(1, 9)
        tb.issue(StorageOp.READ, tag, sector, count)
        expected_reads[tag] = bytes(image[sector * SECTOR:(sector + count) * SECTOR])
        tag += 1
    tb.barrier()
    written = []
    for start in range(0, capacity - 8, 24):
        sector = start + rng.randrange(8)
        count = rng.randint(1, 8)
        data = rng.randbytes(count * SECTOR)
        tb.issue(StorageOp.WRITE, tag, sector, count, data)
        image[sector * SECTOR:(sector + count) * SECTOR] = data
        written.append((tag, sector, count))
        tag += 1
    flush_tag = tag
    tb.issue(StorageOp.FLUSH, flush_tag)
    tag += 1
    for _, sector, count in written:
        tb.issue(StorageOp.READ, tag, sector, count)
        expected_reads[tag] = bytes(image[sector * SECTOR:(sector + count) * SECTOR])
        tag += 1
    assert tag <= 64
    tb.run(20000)
    assert set(tb.reads) == set(expected_reads), "not every READ was answered"
    for t, want in expected_reads.items():
        assert tb.reads[t][1] == want, f"READ tag {t}: wrong data"
    assert set(tb.dones) == {t for t, _, _ in written} | {flush_tag}
    # FLUSH: taken only after every earlier WRITE was done, done after all of them.
    taken = {t: c for c, t in tb.taken}
    for t, _, _ in written:
        assert tb.dones[t] <= taken[flush_tag] < tb.dones[flush_tag], \
            f"FLUSH taken at {taken[flush_tag]}, WRITE {t} done at {tb.dones[t]}"
    assert _overtakes(tb.order, tb.commands) > 0, "nothing finished out of order"


def _overtakes(order: list[int], commands: list[tuple]) -> int:
    issued = [c[1] for c in commands if c is not None]
    position = {tag: k for k, tag in enumerate(issued)}
    return sum(1 for a, b in zip(order, order[1:]) if position[b] < position[a])


def test_latency_order():
    """With no jitter, a READ to the fast bank overtakes an earlier one to the slow bank."""
    rng = random.Random(seed())
    dut = RamDisk(width=64, tag_width=4, capacity=64, banks=4, stripe=4,
                  latency=(400, 0, 150, 80), jitter=1, slots=4)
    tb = StoragePortTB(dut, rng, 64)
    tb.ready_p = 1.0
    # Sector 0 is in bank 0 (400 cycles), 4 in bank 1 (0), 8 in bank 2 (150), 12 in bank 3
    # (80); a one-sector burst takes 64 cycles, so each is over before the next is due.
    for tag, sector in enumerate((0, 4, 8, 12)):
        tb.issue(StorageOp.READ, tag, sector, 1)
    tb.run(800)
    assert tb.order == [1, 3, 2, 0]
