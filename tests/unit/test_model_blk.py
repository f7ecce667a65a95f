"""Scenarios for the virtio-blk golden model (sim/model/blk.py).

Requests are laid out in memory the way a driver would (header, data, status in their own
descriptors unless a test is about framing), executed by the model, and the status byte,
the data in guest memory, the used length and the disk are compared with virtio 1.2 §5.2.6
and the outcomes defined in docs/robustness.md. The last test runs a random request mix
through the virtqueue model and the blk model together against a reference disk.
"""
import os
import random
import struct

import pytest

from hdl.virtio.spec import BlkConfig, BlkFeature, Feature, VirtioBlkStatus, VirtioBlkType
from sim.model.blk import (
    BlkDeviceConfig, BlkDeviceModel, Disk, encode_request_header, gather, scatter,
)
from sim.model.memory import SparseMemory
from sim.model.split_ring import RingDriver, SplitRing, SplitRingLayout
from sim.model.virtqueue import Descriptor, SplitVirtqueueDevice, UsedRingChecker

OK, IOERR, UNSUPP = VirtioBlkStatus.OK, VirtioBlkStatus.IOERR, VirtioBlkStatus.UNSUPP
IN, OUT, FLUSH, GET_ID = (VirtioBlkType.IN, VirtioBlkType.OUT, VirtioBlkType.FLUSH,
                          VirtioBlkType.GET_ID)
SENTINEL = 0xA5
CAPACITY = 64


def seed_from_env() -> int:
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    return seed


def pattern_disk(capacity=CAPACITY):
    """A disk whose every byte says where it is: sector number and offset."""
    image = b"".join(bytes((s * 7 + i) & 0xFF for i in range(512)) for s in range(capacity))
    return Disk(capacity, image)


class BlkBench:
    """Guest memory, a disk and the model; lays requests out like a driver."""

    def __init__(self, *, capacity=CAPACITY, **options):
        self.mem = SparseMemory()
        self.disk = pattern_disk(capacity)
        self.model = BlkDeviceModel(self.disk, **options)
        self._next = 0x10_0000

    def buffer(self, length, fill=SENTINEL):
        addr, self._next = self._next, self._next + ((length + 0xFFF) & ~0xFFF) + 0x1000
        self.mem.write(addr, bytes([fill]) * length)
        return addr

    def readable(self, data):
        addr = self.buffer(len(data))
        self.mem.write(addr, data)
        return Descriptor(addr, len(data), False)

    def writable(self, length):
        return Descriptor(self.buffer(length), length, True)

    def request(self, type_, sector=0, *, out=b"", in_len=0, status=True):
        """Header, OUT data, IN data and status, each in its own descriptor."""
        descs = [self.readable(encode_request_header(type_, sector))]
        if out:
            descs.append(self.readable(out))
        if in_len:
            descs.append(self.writable(in_len))
        if status:
            descs.append(self.writable(1))
        return descs

    def run(self, descs):
        outcome = self.model.handle_element(descs, self.mem)
        return outcome, self.writable_bytes(descs)

    def writable_bytes(self, descs):
        return b"".join(self.mem.read(d.addr, d.len) for d in descs if d.write)


# --- Requests that succeed ---------------------------------------------------------------------

def test_in_reads_sectors_into_the_writable_buffers():
    bench = BlkBench()
    before = bench.disk.image()
    descs = bench.request(IN, 3, in_len=1024)
    outcome, written = bench.run(descs)
    assert outcome.status is OK
    assert written == before[3 * 512:5 * 512] + bytes([OK.value])
    assert outcome.written_len == 1025            # data and status: all of W
    assert bench.disk.image() == before


def test_out_writes_sectors_and_nothing_else():
    bench = BlkBench()
    before = bench.disk.image()
    data = bytes(random.Random(5).randbytes(1536))
    outcome, written = bench.run(bench.request(OUT, 10, out=data))
    assert (outcome.status, outcome.written_len, written) == (OK, 1, bytes([OK.value]))
    assert bench.disk.image() == before[:10 * 512] + data + before[13 * 512:]


def test_last_sector_is_in_range():
    bench = BlkBench()
    outcome, written = bench.run(bench.request(IN, CAPACITY - 1, in_len=512))
    assert outcome.status is OK and written[:512] == bench.disk.read(CAPACITY - 1, 1)


def test_zero_length_read_is_a_status_only_request():
    bench = BlkBench()
    outcome, written = bench.run(bench.request(IN, 5))
    assert (outcome.status, outcome.written_len, written) == (OK, 1, b"\x00")


FRAMINGS = ("canonical", "one readable, one writable", "byte-scattered")


def frame(bench, framing, type_, sector, out, in_len):
    """The same request split into descriptors in different ways (§2.7.4.1)."""
    if framing == "canonical":
        return bench.request(type_, sector, out=out, in_len=in_len)
    readable = encode_request_header(type_, sector) + out
    if framing == "one readable, one writable":
        return [bench.readable(readable), bench.writable(in_len + 1)]
    pieces, last = [], 0
    for cut in [c for c in (1, 8, 15, 17, 600) if c < len(readable)] + [len(readable)]:
        pieces.append(bench.readable(readable[last:cut]))
        last = cut
    data = [bench.writable(n) for n in ([3, in_len - 3] if in_len > 3 else [in_len]) if n]
    return pieces + data + [bench.writable(1)]


@pytest.mark.parametrize("type_,sector,out,in_len", [
    (IN, 7, b"", 1024), (OUT, 2, bytes(range(256)) * 4, 0), (GET_ID, 0, b"", 20),
])
def test_result_does_not_depend_on_descriptor_layout(type_, sector, out, in_len):
    results = {}
    for framing in FRAMINGS:
        bench = BlkBench(serial="sn-1")
        descs = frame(bench, framing, type_, sector, out, in_len)
        outcome, written = bench.run(descs)
        assert outcome.status is OK, (framing, outcome.reason)
        results[framing] = (outcome.written_len, written, bench.disk.image())
    assert len(set(results.values())) == 1, results.keys()


def test_flush_succeeds_and_ignores_sector():
    bench = BlkBench()
    outcome, written = bench.run(bench.request(FLUSH, 1234))
    assert (outcome.status, outcome.written_len, written) == (OK, 1, b"\x00")


@pytest.mark.parametrize("serial,expected", [
    ("virtio-inorder-0001", b"virtio-inorder-0001\0"),
    ("ABCDEFGHIJKLMNOPQRST", b"ABCDEFGHIJKLMNOPQRST"),      # exactly 20: no NUL
    ("", bytes(20)),
])
def test_get_id_returns_the_nul_padded_serial(serial, expected):
    bench = BlkBench(serial=serial)
    outcome, written = bench.run(bench.request(GET_ID, in_len=20))
    assert (outcome.status, outcome.written_len, written) == (OK, 21, expected + b"\x00")


@pytest.mark.parametrize("serial", ["ABCDEFGHIJKLMNOPQRSTU", "caf\u00e9", "a\0b"])
def test_bad_serials_are_refused(serial):
    with pytest.raises((ValueError, UnicodeEncodeError)):
        BlkDeviceModel(Disk(1), serial=serial)


# --- IOERR and UNSUPP: status only, nothing else touched ---------------------------------------

def assert_status_only(bench, descs, status, before):
    outcome, written = bench.run(descs)
    writable_len = sum(d.len for d in descs if d.write)
    assert outcome.status is status, outcome.reason
    # the status byte is the last writable byte; every other writable byte is untouched
    assert written == bytes([SENTINEL]) * (writable_len - 1) + bytes([status.value])
    assert outcome.written_len == (1 if writable_len == 1 else 0)
    assert bench.disk.image() == before
    return outcome


@pytest.mark.parametrize("type_,in_len", [
    (VirtioBlkType.DISCARD, 0), (VirtioBlkType.WRITE_ZEROES, 0),
    (VirtioBlkType.GET_LIFETIME, 8), (VirtioBlkType.SECURE_ERASE, 0), (99, 0),
    (0xFFFF_FFFF, 512), (5, 0),     # 5: the legacy FLUSH_OUT, not served by a modern device
])
def test_unserved_types_are_unsupp(type_, in_len):
    bench = BlkBench()
    before = bench.disk.image()
    out = struct.pack("<QII", 0, 8, 0) if type_ in (VirtioBlkType.DISCARD,) else b""
    assert_status_only(bench, bench.request(type_, 0, out=out, in_len=in_len), UNSUPP, before)


def test_flush_is_unsupp_when_not_offered():
    bench = BlkBench(flush=False)
    assert_status_only(bench, bench.request(FLUSH), UNSUPP, bench.disk.image())


@pytest.mark.parametrize("type_,sector,out_len,in_len", [
    (IN, CAPACITY - 1, 0, 1024),         # one sector past the end
    (IN, CAPACITY, 0, 512),
    (IN, (1 << 64) - 1, 0, 512),         # sector + count must not wrap into range
    (IN, 0, 0, 511),                     # not a multiple of 512
    (IN, 0, 0, 513),
    (OUT, CAPACITY - 2, 1536, 0),
    (OUT, (1 << 64) - 2, 1024, 0),
    (OUT, 0, 100, 0),
])
def test_out_of_range_or_odd_lengths_are_ioerr(type_, sector, out_len, in_len):
    bench = BlkBench()
    before = bench.disk.image()
    descs = bench.request(type_, sector, out=bytes([0x3C]) * out_len, in_len=in_len)
    assert_status_only(bench, descs, IOERR, before)


def test_read_only_device_refuses_writes_but_reads():
    bench = BlkBench(read_only=True)
    before = bench.disk.image()
    assert_status_only(bench, bench.request(OUT, 0, out=bytes(512)), IOERR, before)
    outcome, written = bench.run(bench.request(IN, 0, in_len=512))
    assert outcome.status is OK and written[:512] == before[:512]


MALFORMED = {
    "header short": lambda b: [b.readable(encode_request_header(IN, 0)[:15]), b.writable(1)],
    "no readable bytes": lambda b: [b.writable(513)],
    "IN with readable data": lambda b: b.request(IN, 0, out=bytes(512), in_len=512),
    "OUT with writable data": lambda b: b.request(OUT, 0, out=bytes(512), in_len=512),
    "FLUSH with writable data": lambda b: b.request(FLUSH, 0, in_len=512),
    "FLUSH with readable data": lambda b: b.request(FLUSH, 0, out=bytes(512)),
    "GET_ID too short": lambda b: b.request(GET_ID, 0, in_len=19),
    "GET_ID too long": lambda b: b.request(GET_ID, 0, in_len=512),
    "GET_ID with readable data": lambda b: b.request(GET_ID, 0, out=bytes(4), in_len=20),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_requests_are_ioerr(case):
    bench = BlkBench(serial="x")
    before = bench.disk.image()
    outcome = assert_status_only(bench, MALFORMED[case](bench), IOERR, before)
    assert outcome.reason


@pytest.mark.parametrize("type_", [IN, OUT, GET_ID, 99])
def test_request_without_a_writable_byte_is_not_executed(type_):
    bench = BlkBench()
    before = bench.disk.image()
    descs = bench.request(type_, 0, out=bytes([1]) * 512, status=False)
    readable_before = b"".join(bench.mem.read(d.addr, d.len) for d in descs)
    outcome, _ = bench.run(descs)
    assert (outcome.status, outcome.written_len, outcome.writable_writes()) == (None, 0, [])
    assert bench.disk.image() == before
    assert b"".join(bench.mem.read(d.addr, d.len) for d in descs) == readable_before


def test_counts_by_type_and_status():
    bench = BlkBench()
    bench.run(bench.request(IN, 0, in_len=512))
    bench.run(bench.request(IN, CAPACITY, in_len=512))
    bench.run(bench.request(77))
    assert bench.model.counts == {("IN", "OK"): 1, ("IN", "IOERR"): 1, ("77", "UNSUPP"): 1}


# --- Byte streams: scatter never leaves the writable buffers -----------------------------------

def test_scatter_and_gather_respect_buffer_boundaries():
    seed = seed_from_env()
    rng = random.Random(seed)
    for _ in range(300):
        descs = [Descriptor(0x1000 * (i + 1), rng.randint(0, 40), rng.random() < 0.5)
                 for i in range(rng.randint(1, 6))]
        writable = [d for d in descs if d.write]
        total = sum(d.len for d in writable)
        if total == 0:
            with pytest.raises(ValueError):
                scatter(descs, 0, b"x")
            continue
        offset = rng.randrange(total)
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, total - offset)))
        mem = SparseMemory()
        for addr, piece in scatter(descs, offset, data):
            assert any(d.addr <= addr and addr + len(piece) <= d.addr + d.len for d in writable)
            mem.write(addr, piece)
        stream = b"".join(mem.read(d.addr, d.len) for d in writable)
        assert stream[offset:offset + len(data)] == data
        assert gather(descs, mem) == bytes(sum(d.len for d in descs if not d.write))


# --- Device configuration ----------------------------------------------------------------------

def test_device_config_encoding_and_features():
    config = BlkDeviceConfig(capacity=0x1_2345_6789, size_max=65536, seg_max=126,
                             blk_size=4096, num_queues=4)
    space = config.encode()
    assert len(space) == BlkConfig.SIZE == 0x48
    assert struct.unpack_from("<Q", space, 0x00)[0] == 0x1_2345_6789
    assert struct.unpack_from("<I", space, 0x08)[0] == 65536
    assert struct.unpack_from("<I", space, 0x0C)[0] == 126
    assert struct.unpack_from("<I", space, 0x14)[0] == 4096
    assert struct.unpack_from("<H", space, 0x22)[0] == 4
    assert space[0x10:0x14] == bytes(4) and space[0x18:0x22] == bytes(10)   # not offered
    assert space[0x24:] == bytes(0x48 - 0x24)
    features = config.features()
    for bit in (Feature.VERSION_1, BlkFeature.SIZE_MAX, BlkFeature.SEG_MAX, BlkFeature.BLK_SIZE,
                BlkFeature.MQ, BlkFeature.FLUSH):
        assert features >> bit & 1, bit
    assert not features >> BlkFeature.RO & 1
    bare = BlkDeviceConfig(capacity=8, flush=False, read_only=True)
    assert bare.features() == (1 << Feature.VERSION_1) | (1 << BlkFeature.RO)
    assert bare.encode() == (8).to_bytes(8, "little") + bytes(0x40)


def test_disk_bounds():
    disk = Disk(4)
    disk.write(3, bytes([7]) * 512)
    assert disk.read(3, 1) == bytes([7]) * 512
    for call in (lambda: disk.read(4, 1), lambda: disk.write(3, bytes(1024)),
                 lambda: disk.write(0, bytes(100)), lambda: Disk(2, bytes(10))):
        with pytest.raises(ValueError):
            call()


# --- End to end: virtqueue model + blk model against a reference disk --------------------------

@pytest.mark.parametrize("in_order", [True, False])
def test_random_request_mix_through_the_queue(in_order):
    """Random IN / OUT / FLUSH / GET_ID requests, some bad, on a 16-entry queue; the backend
    executes them in a random order. The data read, the disk, and the used ring (judged by the
    checker from the driver's view of each buffer) must all be right; failed reads are not
    "used completely", so under IN_ORDER they end their runs."""
    seed = seed_from_env()
    rng = random.Random(seed)
    mem = SparseMemory()
    layout = SplitRingLayout.contiguous(0x1000, 16)
    ring = SplitRing(mem, layout)
    driver = RingDriver(ring, in_order=in_order)
    device = SplitVirtqueueDevice(mem, layout, in_order=in_order)
    checker = UsedRingChecker(16, in_order=in_order)
    disk = pattern_disk()
    reference = bytearray(disk.image())
    model = BlkDeviceModel(disk, serial="e2e")
    requests = {}           # seq -> (kind, sector, count, descriptors as placed by the driver)
    heads = {}
    next_addr = 0x100_0000
    fed = 0
    statuses = []
    pending = set()         # fetched by the device, not yet executed

    def place(length, fill=b""):
        nonlocal next_addr
        addr, next_addr = next_addr, next_addr + ((length + 0xFFF) & ~0xFFF)
        mem.write(addr, fill or bytes([SENTINEL]) * length)
        return addr

    submitted = 0
    while submitted < 300 or device.in_flight:
        while submitted < 300 and driver.num_free >= 3 and rng.random() < 0.7:
            kind = rng.choice(["IN", "IN", "OUT", "OUT", "FLUSH", "GET_ID", "BAD"])
            count = rng.randint(1, 4)
            sector = rng.randrange(CAPACITY - count + 1) if rng.random() < 0.9 else CAPACITY
            if kind == "OUT":
                payload = rng.randbytes(512 * count)
                header = encode_request_header(OUT, sector)
                elements = [(place(16, header), 16, False), (place(len(payload), payload),
                                                             len(payload), False),
                            (place(1), 1, True)]
            elif kind in ("IN", "BAD"):
                header = encode_request_header(IN if kind == "IN" else 42, sector)
                elements = [(place(16, header), 16, False), (place(512 * count), 512 * count,
                                                             True), (place(1), 1, True)]
            else:
                header = encode_request_header(FLUSH if kind == "FLUSH" else GET_ID)
                data = [(place(20), 20, True)] if kind == "GET_ID" else []
                elements = [(place(16, header), 16, False)] + data + [(place(1), 1, True)]
            head = driver.add(elements)
            seq = checker.available(head, sum(n for _, n, w in elements if w))
            requests[seq] = (kind, sector, count, elements)
            heads[seq] = head
            submitted += 1
        driver.publish()
        pending.update(element.seq for element in device.fetch())
        # the backend finishes a random subset of what is in flight, in random order
        for seq in rng.sample(sorted(pending), rng.randint(0, len(pending))):
            pending.remove(seq)
            kind, sector, count, elements = requests.pop(seq)
            outcome = model.handle_element(device.element(seq).descriptors, mem)
            if kind == "OUT" and outcome.status is OK:
                reference[sector * 512:(sector + count) * 512] = mem.read(elements[1][0],
                                                                          512 * count)
            if kind == "IN" and outcome.status is OK:
                assert mem.read(elements[1][0], 512 * count) == \
                    bytes(reference[sector * 512:(sector + count) * 512])
            expected = {"IN": OK if sector + count <= CAPACITY else IOERR,
                        "OUT": OK if sector + count <= CAPACITY else IOERR,
                        "FLUSH": OK, "GET_ID": OK, "BAD": UNSUPP}[kind]
            assert outcome.status is expected
            assert mem.read(elements[-1][0], 1) == bytes([expected.value])
            statuses.append(outcome.status)
            device.complete(seq, outcome.written_len)
            checker.completed(seq, outcome.written_len)
            if rng.random() < 0.5:
                device.flush()
        if not device.in_flight or rng.random() < 0.5:
            device.flush()
        for retired in checker.observe_all(device.writes[fed:]):
            driver.free(heads.pop(retired))
        fed = len(device.writes)
    report = checker.finish()
    assert report.buffers_used == 300
    assert disk.image() == bytes(reference)
    assert OK in statuses and IOERR in statuses and UNSUPP in statuses
