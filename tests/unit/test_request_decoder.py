"""Amaranth-simulator test of hdl/blk/request_decoder.py against the golden model.

Random and edge-case requests (every type, sectors around the capacity and near 2^64,
readable and writable lengths around the header, the status byte, 512-byte multiples and
the 4 GiB saturation) are given to :class:`sim.model.blk.BlkDeviceModel` as bytes and to
the decoder as totals plus the header; the decoder's action, status, sector and count must
be what the model did. The engine's own rules (too many descriptors, a failed header read:
IOERR) are checked on top.
"""
import random

import pytest
from amaranth.sim import Simulator

from hdl.blk.layouts import LEN_SATURATED, BlkAction
from hdl.blk.request_decoder import MAX_CAPACITY, RequestDecoder
from hdl.virtio.spec import VirtioBlkStatus, VirtioBlkType
from sim.model.blk import BlkDeviceModel, Disk, encode_request_header
from tests.unit.sim_streams import seed

SECTOR = 512


def _expected(model: BlkDeviceModel, readable: bytes, w_len: int, too_many: bool,
              header_error: bool) -> tuple[BlkAction, VirtioBlkStatus, int, int]:
    """(action, status, sector, count) from the golden model's outcome."""
    if w_len and (too_many or (header_error and len(readable) >= 16)):
        return BlkAction.STATUS, VirtioBlkStatus.IOERR, 0, 0
    outcome = model.handle(readable, w_len)
    if outcome.status is None:
        return BlkAction.NO_STATUS, VirtioBlkStatus.OK, 0, 0
    if outcome.status is not VirtioBlkStatus.OK:
        return BlkAction.STATUS, outcome.status, 0, 0
    type_ = int.from_bytes(readable[0:4], "little")
    sector = int.from_bytes(readable[8:16], "little")
    if type_ == VirtioBlkType.IN.value:
        count = (w_len - 1) // SECTOR
        return (BlkAction.READ if count else BlkAction.STATUS), VirtioBlkStatus.OK, sector, count
    if type_ == VirtioBlkType.OUT.value:
        count = (len(readable) - 16) // SECTOR
        return (BlkAction.WRITE if count else BlkAction.STATUS), VirtioBlkStatus.OK, sector, count
    if type_ == VirtioBlkType.FLUSH.value:
        return BlkAction.FLUSH, VirtioBlkStatus.OK, 0, 0
    return BlkAction.GET_ID, VirtioBlkStatus.OK, 0, 0


def _directed():
    """One request per action, so that every action is exercised whatever the seed (a valid
    WRITE is rare among the random cases: a few in 1500)."""
    def req(type_, sector=0, data=0, w_len=1):
        return encode_request_header(type_, sector, 0) + bytes(data), w_len, False, False
    yield req(VirtioBlkType.OUT.value, data=2 * SECTOR)                    # WRITE
    yield req(VirtioBlkType.IN.value, w_len=1 + 2 * SECTOR)                # READ
    yield req(VirtioBlkType.FLUSH.value)                                   # FLUSH
    yield req(VirtioBlkType.GET_ID.value, w_len=21)                        # GET_ID
    yield req(5)                                                           # STATUS (UNSUPP)
    yield req(VirtioBlkType.IN.value, w_len=0)                             # NO_STATUS


def _cases(rng: random.Random, capacity: int, n: int):
    types = [t.value for t in VirtioBlkType] + [5, 2, 0xFFFF_FFFF]
    served = [0, 1, 4, 8]
    for _ in range(n):
        type_ = rng.choice(served) if rng.random() < 0.7 else rng.choice(types)
        sector = rng.choice([0, 1, capacity - 8, capacity - 1, capacity, capacity + 1,
                             rng.randrange(capacity), rng.randrange(1 << 64),
                             (1 << 64) - 1, (1 << 64) - 8, 1 << 63, 1 << 23])
        r_len = rng.choice([0, rng.randint(1, 15), 16, 16, 16, 17,
                            16 + SECTOR * rng.randint(1, 16),
                            16 + SECTOR * rng.randint(1, 16) + rng.choice([-1, 1, 256]),
                            16 + SECTOR * (capacity - sector) if 0 < capacity - sector < 64
                            else 16 + SECTOR])
        w_len = rng.choice([0, 1, 1, 2, 20, 21, 22, 1 + SECTOR * rng.randint(1, 16),
                            SECTOR * rng.randint(1, 16), rng.randrange(1 << 32),
                            1 + SECTOR * (capacity - sector) if 0 < capacity - sector < 64
                            else 1 + SECTOR,
                            1 + SECTOR * (capacity + 1), LEN_SATURATED + 1 + SECTOR,
                            (1 << 36) + 1])
        header = encode_request_header(type_ & 0xFFFF_FFFF, sector & ((1 << 64) - 1),
                                       rng.randrange(1 << 32))
        readable = (header + bytes(rng.randrange(256) for _ in range(r_len - 16)))[:r_len] \
            if r_len >= 16 else header[:r_len]
        too_many = rng.random() < 0.05
        header_error = rng.random() < 0.05
        yield readable, w_len, too_many, header_error


@pytest.mark.parametrize("capacity", [1000, MAX_CAPACITY])
def test_decoder_matches_model(capacity):
    rng = random.Random(seed())
    dut = RequestDecoder(capacity=capacity)
    model = BlkDeviceModel(Disk(0), serial="x")
    # The model's disk only bounds the range check; a zero-filled disk of `capacity`
    # sectors would be large, so a disk object that only knows its size stands in.
    model.disk = type("SizedDisk", (), {"capacity": capacity,
                                        "read": lambda self, s, c: bytes(c * SECTOR),
                                        "write": lambda self, s, d: None})()
    cases = list(_directed()) + list(_cases(rng, capacity, 1500))
    mismatches = []

    async def bench(ctx):
        for readable, w_len, too_many, header_error in cases:
            hdr = (readable + bytes(16))[:16]
            ctx.set(dut.r_len, min(len(readable), LEN_SATURATED))
            ctx.set(dut.w_len, min(w_len, LEN_SATURATED))
            ctx.set(dut.too_many, too_many)
            ctx.set(dut.header_error, header_error)
            # The header as it lies in memory: VirtioBlkReqHeader is little-endian packed.
            ctx.set(dut.header.as_value(), int.from_bytes(hdr, "little"))
            await ctx.delay(1e-9)
            action, status, sector, count = _expected(model, readable, w_len, too_many,
                                                      header_error)
            got_action = ctx.get(dut.action)
            got = (got_action, ctx.get(dut.status))
            want = (action, status)
            if action in (BlkAction.READ, BlkAction.WRITE):
                got += (ctx.get(dut.sector), ctx.get(dut.count), ctx.get(dut.data_len))
                want += (sector, count, count * SECTOR)
            if got != want:
                mismatches.append((len(readable), w_len, hdr.hex(), too_many, header_error,
                                   got, want))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]}"
    kinds = {_expected(model, *case)[0] for case in cases}
    assert kinds == set(BlkAction), f"not every action was exercised: {kinds}"
