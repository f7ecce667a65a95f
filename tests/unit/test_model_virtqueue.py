"""Scenarios for the split-virtqueue golden model (sim/model/virtqueue.py) and its checker.

Each test states a driver-side scenario, runs the device model, and compares the device's
writes with what virtio 1.2 §2.7 demands, worked out by hand in the test; the checker is run
on every model output and is itself shown to reject each kind of wrong device behaviour.
Randomized tests print their seed and take SEED=... to replay.
"""
import os
import random

import pytest

from hdl.virtio.spec import VirtqDescFlags
from sim.model.memory import SparseMemory
from sim.model.split_ring import RawDesc, RingDriver, SplitRing, SplitRingLayout, encode_desc
from sim.model.virtqueue import (
    AvailEventWrite, ChainFault, Descriptor, ErrorKind, SplitVirtqueueDevice, UsedElemWrite,
    UsedIdxWrite, UsedNotify, UsedRingChecker, UsedRingViolation, walk_chain,
)

NEXT, WRITE, INDIRECT = int(VirtqDescFlags.NEXT), int(VirtqDescFlags.WRITE), \
    int(VirtqDescFlags.INDIRECT)
RING_BASE = 0x10_0000
DATA_BASE = 0x100_0000
TABLE_BASE = 0x80_0000


def seed_from_env() -> int:
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    return seed


class QueueBench:
    """One queue in memory with a driver side, the device model and the checker.

    The checker learns the buffers from the driver side (what the driver built), not from the
    model, so the model's chain walking is checked too.
    """

    def __init__(self, queue_size, *, in_order=False, event_idx=False, indirect=False,
                 max_batch=None, max_chain_len=None, strict_notifications=True):
        self.mem = SparseMemory()
        self.layout = SplitRingLayout.contiguous(RING_BASE, queue_size)
        self.ring = SplitRing(self.mem, self.layout)
        self.driver = RingDriver(self.ring, in_order=in_order)
        self.device = SplitVirtqueueDevice(self.mem, self.layout, in_order=in_order,
                                           event_idx=event_idx, indirect_desc=indirect,
                                           max_batch=max_batch, max_chain_len=max_chain_len)
        self.checker = UsedRingChecker(queue_size, in_order=in_order, event_idx=event_idx,
                                       strict_notifications=strict_notifications)
        self.queue_size = queue_size
        self.built = {}             # head -> the (addr, len, write) elements the driver placed
        self._added = []            # (head, writable bytes) added, not yet published
        self.head_of = {}           # seq -> head, outstanding
        self.pending = set()        # fetched by the device, not yet completed
        self._fed = 0
        self._next_data = DATA_BASE
        self._next_table = TABLE_BASE

    def add(self, readable=(16,), writable=(513,), *, indirect=False):
        elements = []
        for length, write in [(n, False) for n in readable] + [(n, True) for n in writable]:
            elements.append((self._next_data, length, write))
            self._next_data += 0x1000
        table = None
        if indirect:
            table, self._next_table = self._next_table, self._next_table + 0x1000
        head = self.driver.add(elements, indirect_table=table)
        self.built[head] = elements
        self._added.append((head, sum(writable)))
        return head

    def kick(self):
        """Publish what was added and let the device fetch."""
        self.driver.publish()
        for head, writable in self._added:
            self.head_of[self.checker.available(head, writable)] = head
        self._added = []
        elements = self.device.fetch()
        self.pending.update(e.seq for e in elements)
        self.feed()
        return elements

    def complete(self, seq, written=None, *, flush=True):
        if written is None:
            written = self.device.element(seq).writable_len
        self.device.complete(seq, written)
        self.checker.completed(seq, written)
        self.pending.discard(seq)
        if flush:
            return self.flush()
        return []

    def flush(self):
        self.device.flush()
        return self.feed()

    def feed(self):
        """Give the checker the device writes it has not seen; free what they returned."""
        new = self.device.writes[self._fed:]
        self._fed = len(self.device.writes)
        for seq in self.checker.observe_all(new):
            self.driver.free(self.head_of.pop(seq))
        return new


def used_ring(bench):
    return [bench.ring.used_elem(slot) for slot in range(bench.queue_size)]


# --- Fetching: chains as the spec lays them out ---------------------------------------------

def test_fetch_walks_direct_chains_in_avail_order():
    bench = QueueBench(16)
    shapes = [((16,), (513,)), ((16, 4096, 512), (1,)), ((), (8, 8)), ((100,), ())]
    heads = [bench.add(r, w) for r, w in shapes]
    elements = bench.kick()
    assert [e.seq for e in elements] == [0, 1, 2, 3]
    assert [e.avail_idx for e in elements] == [0, 1, 2, 3]
    assert [e.head for e in elements] == heads
    for element in elements:
        assert element.descriptors == tuple(Descriptor(a, n, w)
                                            for a, n, w in bench.built[element.head])
    assert [(e.readable_len, e.writable_len) for e in elements] == \
        [(16, 513), (4624, 1), (0, 16), (100, 0)]
    assert bench.device.last_avail_idx == 4
    assert bench.kick() == []               # nothing new


def test_fetch_expands_indirect_tables():
    bench = QueueBench(4, indirect=True)
    head = bench.add((16, 4096), (4096, 1), indirect=True)
    (element,) = bench.kick()
    assert element.head == head
    assert element.descriptors == tuple(Descriptor(a, n, w) for a, n, w in bench.built[head])
    assert bench.driver.num_free == 3       # the whole chain took one ring descriptor


def test_direct_prefix_then_indirect_tail_and_ignored_write_flag():
    # §2.7.5.3.2: zero or more chained descriptors followed by one INDIRECT descriptor is
    # valid, and the WRITE flag of the descriptor pointing to the table is ignored.
    bench = QueueBench(4, indirect=True)
    table = [RawDesc(0x5000, 64, WRITE | NEXT, 1), RawDesc(0x6000, 1, WRITE, 0)]
    bench.mem.write(TABLE_BASE, b"".join(encode_desc(d) for d in table))
    bench.ring.set_desc(2, RawDesc(0x4000, 16, NEXT, 3))
    bench.ring.set_desc(3, RawDesc(TABLE_BASE, 32, INDIRECT | WRITE, 0))
    bench.ring.set_avail_entry(0, 2)
    bench.ring.set_avail_idx(1)
    (element,) = bench.device.fetch()
    assert element.descriptors == (Descriptor(0x4000, 16, False), Descriptor(0x5000, 64, True),
                                   Descriptor(0x6000, 1, True))


def test_in_order_driver_uses_descriptors_in_ring_order():
    bench = QueueBench(4, in_order=True)
    bench.add((16,), (1,))
    bench.add((16,), ())
    heads = [e.head for e in bench.kick()]
    assert heads == [0, 2]
    assert bench.ring.desc(0) == RawDesc(DATA_BASE, 16, NEXT, 1)
    # the next chain wraps around the end of the table: 3 -> 0 (§2.7.5.2)
    for seq in (0, 1):
        bench.complete(seq)
    bench.add((16,), (4,))
    (element,) = bench.kick()
    assert element.head == 3 and bench.ring.desc(3).next == 0


def test_chain_as_long_as_the_queue_is_accepted():
    bench = QueueBench(8)
    bench.add((16,) * 4, (512,) * 4)
    (element,) = bench.kick()
    assert len(element.descriptors) == 8 and bench.device.error is None


# --- Bad chains: defined outcome, queue stops, device needs reset ---------------------------

def _loop(ring, mem):
    ring.set_desc(5, RawDesc(0x1000, 16, NEXT, 6))
    ring.set_desc(6, RawDesc(0x2000, 16, NEXT, 5))
    return 5


def _head_out_of_range(ring, mem):
    return 8


def _next_out_of_range(ring, mem):
    ring.set_desc(5, RawDesc(0x1000, 16, NEXT, 8))
    return 5


def _indirect_table(mem, *descs):
    mem.write(TABLE_BASE, b"".join(encode_desc(d) for d in descs))


def _nested_indirect(ring, mem):
    _indirect_table(mem, RawDesc(0x1000, 16, NEXT, 1), RawDesc(TABLE_BASE + 0x100, 16, INDIRECT))
    ring.set_desc(5, RawDesc(TABLE_BASE, 32, INDIRECT))
    return 5


def _indirect_with_next(ring, mem):
    _indirect_table(mem, RawDesc(0x1000, 16))
    ring.set_desc(5, RawDesc(TABLE_BASE, 16, INDIRECT | NEXT, 6))
    ring.set_desc(6, RawDesc(0x2000, 1, WRITE))
    return 5


def _bad_indirect_len(length):
    def build(ring, mem):
        _indirect_table(mem, RawDesc(0x1000, 16), RawDesc(0x2000, 16))
        ring.set_desc(5, RawDesc(TABLE_BASE, length, INDIRECT))
        return 5
    return build


def _indirect_loop(ring, mem):
    _indirect_table(mem, RawDesc(0x1000, 16, NEXT, 1), RawDesc(0x2000, 16, NEXT, 0))
    ring.set_desc(5, RawDesc(TABLE_BASE, 32, INDIRECT))
    return 5


def _indirect_next_out_of_range(ring, mem):
    _indirect_table(mem, RawDesc(0x1000, 16, NEXT, 2), RawDesc(0x2000, 16))
    ring.set_desc(5, RawDesc(TABLE_BASE, 32, INDIRECT))
    return 5


def _readable_after_writable(ring, mem):
    ring.set_desc(5, RawDesc(0x1000, 16, WRITE | NEXT, 6))
    ring.set_desc(6, RawDesc(0x2000, 16, 0))
    return 5


def _readable_after_writable_indirect(ring, mem):
    _indirect_table(mem, RawDesc(0x1000, 1, WRITE | NEXT, 1), RawDesc(0x2000, 16))
    ring.set_desc(5, RawDesc(TABLE_BASE, 32, INDIRECT))
    return 5


def _three_descriptors(ring, mem):
    ring.set_desc(5, RawDesc(0x1000, 16, NEXT, 6))
    ring.set_desc(6, RawDesc(0x2000, 16, NEXT, 7))
    ring.set_desc(7, RawDesc(0x3000, 1, WRITE))
    return 5


BAD_CHAINS = {
    "loop": (_loop, ErrorKind.CHAIN_TOO_LONG, {}),
    "head_out_of_range": (_head_out_of_range, ErrorKind.HEAD_OUT_OF_RANGE, {}),
    "next_out_of_range": (_next_out_of_range, ErrorKind.NEXT_OUT_OF_RANGE, {}),
    "nested_indirect": (_nested_indirect, ErrorKind.NESTED_INDIRECT, {}),
    "indirect_with_next": (_indirect_with_next, ErrorKind.INDIRECT_WITH_NEXT, {}),
    "indirect_not_negotiated": (_indirect_loop, ErrorKind.INDIRECT_NOT_NEGOTIATED,
                                {"indirect": False}),
    "indirect_len_0": (_bad_indirect_len(0), ErrorKind.BAD_INDIRECT_LEN, {}),
    "indirect_len_24": (_bad_indirect_len(24), ErrorKind.BAD_INDIRECT_LEN, {}),
    "indirect_loop": (_indirect_loop, ErrorKind.CHAIN_TOO_LONG, {}),
    "indirect_next_out_of_range": (_indirect_next_out_of_range, ErrorKind.NEXT_OUT_OF_RANGE, {}),
    "readable_after_writable": (_readable_after_writable, ErrorKind.READABLE_AFTER_WRITABLE, {}),
    "readable_after_writable_indirect": (_readable_after_writable_indirect,
                                         ErrorKind.READABLE_AFTER_WRITABLE, {}),
    "device_chain_limit": (_three_descriptors, ErrorKind.CHAIN_TOO_LONG, {"max_chain_len": 2}),
}


@pytest.mark.parametrize("case", sorted(BAD_CHAINS))
def test_bad_chain_stops_the_queue_at_that_entry(case):
    build, kind, options = BAD_CHAINS[case]
    bench = QueueBench(8, indirect=options.get("indirect", True),
                       max_chain_len=options.get("max_chain_len"))
    good = bench.add((16,), (1,))                   # descriptor 0
    bad = build(bench.ring, bench.mem)              # descriptors 5.. (never on the free list
    bench.ring.set_avail_entry(1, bad)              # path of this short test)
    bench.ring.set_avail_entry(2, good)             # a third entry that must not be consumed
    bench.ring.set_avail_idx(3)
    elements = bench.device.fetch()
    assert [e.head for e in elements] == [good]
    error = bench.device.error
    assert error is not None and error.kind is kind
    assert (error.avail_idx, error.head) == (1, bad)
    assert bench.device.last_avail_idx == 1
    assert bench.device.fetch() == []               # stopped: nothing more is consumed
    # the element fetched before the error still completes normally
    bench.device.complete(0, 1)
    writes = bench.device.flush()
    assert writes[:2] == [UsedElemWrite(0, good, 1), UsedIdxWrite(1, avail_flags=0)]


def test_walk_chain_reports_the_same_faults_directly():
    mem = SparseMemory()
    ring = SplitRing(mem, SplitRingLayout.contiguous(RING_BASE, 8))
    head = _loop(ring, mem)
    with pytest.raises(ChainFault) as info:
        walk_chain(ring, head, indirect_desc=True)
    assert info.value.kind is ErrorKind.CHAIN_TOO_LONG


@pytest.mark.parametrize("new_idx", [9, 0xFFFF, 0x8000])
def test_avail_idx_jump_or_decrement_stops_the_queue(new_idx):
    bench = QueueBench(8)
    for _ in range(2):
        bench.add((16,), (1,))
    assert len(bench.kick()) == 2
    bench.ring.set_avail_idx((2 + new_idx) & 0xFFFF if new_idx == 9 else new_idx)
    assert bench.device.fetch() == []
    assert bench.device.error.kind is ErrorKind.AVAIL_IDX_JUMP
    assert bench.device.error.avail_idx == 2 and bench.device.last_avail_idx == 2


def test_a_full_ring_of_available_entries_is_not_a_jump():
    bench = QueueBench(4)
    for _ in range(4):
        bench.add((16,), ())
    assert len(bench.kick()) == 4 and bench.device.error is None


# --- Used ring: exact contents ---------------------------------------------------------------

def test_without_in_order_one_used_element_per_completion_in_completion_order():
    bench = QueueBench(8)
    heads = [bench.add((16,), (512 + i,)) for i in range(4)]
    bench.kick()
    lens = {0: 512, 1: 100, 2: 514, 3: 0}
    writes = []
    for seq in (2, 0, 3, 1):
        writes += bench.complete(seq, lens[seq])
    assert writes == [
        UsedElemWrite(0, heads[2], 514), UsedIdxWrite(1), UsedNotify(),
        UsedElemWrite(1, heads[0], 512), UsedIdxWrite(2), UsedNotify(),
        UsedElemWrite(2, heads[3], 0), UsedIdxWrite(3), UsedNotify(),
        UsedElemWrite(3, heads[1], 100), UsedIdxWrite(4), UsedNotify(),
    ]
    assert used_ring(bench)[:4] == [(heads[2], 514), (heads[0], 512), (heads[3], 0),
                                    (heads[1], 100)]
    assert bench.ring.used_idx() == 4
    report = bench.checker.finish()
    assert report.run_lengths == (1, 1, 1, 1) and report.notifications == 4


def test_in_order_run_is_one_used_element_named_after_its_last_buffer():
    bench = QueueBench(4, in_order=True)
    heads = [bench.add((), (513,)) for _ in range(4)]
    bench.kick()
    assert bench.complete(2) == []                  # 0 and 1 still missing: nothing retires
    assert bench.complete(0) == [UsedElemWrite(0, heads[0], 513), UsedIdxWrite(1), UsedNotify()]
    assert bench.complete(3) == []
    # 1 completes: 1, 2, 3 are ready and go out as one run at the slot of its first buffer
    assert bench.complete(1) == [UsedElemWrite(1, heads[3], 513), UsedIdxWrite(4), UsedNotify()]
    assert used_ring(bench) == [(heads[0], 513), (heads[3], 513), (0, 0), (0, 0)]
    assert bench.checker.finish().run_lengths == (1, 3)


def test_in_order_max_batch_splits_runs():
    bench = QueueBench(8, in_order=True, max_batch=3)
    heads = [bench.add((), (8,)) for _ in range(7)]
    bench.kick()
    for seq in reversed(range(7)):
        bench.complete(seq, flush=False)
    writes = bench.flush()
    assert writes == [
        UsedElemWrite(0, heads[2], 8), UsedIdxWrite(3), UsedNotify(),
        UsedElemWrite(3, heads[5], 8), UsedIdxWrite(6), UsedNotify(),
        UsedElemWrite(6, heads[6], 8), UsedIdxWrite(7), UsedNotify(),
    ]
    assert bench.checker.finish().run_lengths == (3, 3, 1)


@pytest.mark.parametrize("partial,expected_runs", [
    ({1: 100}, [(0, 1), (2, 4)]),
    ({1: 0, 3: 7}, [(0, 1), (2, 3), (4, 4)]),
    ({4: 1}, [(0, 4)]),                 # partial as the last buffer of a run is fine
])
def test_in_order_partly_written_buffer_ends_its_run(partial, expected_runs):
    # §2.7.9: skipped buffers are assumed used completely, so a buffer whose written length
    # is less than its writable length can only be the last of a run.
    bench = QueueBench(8, in_order=True)
    heads = [bench.add((), (513,)) for _ in range(5)]
    bench.kick()
    for seq in range(5):
        bench.complete(seq, partial.get(seq, 513), flush=False)
    writes = [w for w in bench.flush() if isinstance(w, UsedElemWrite)]
    assert writes == [UsedElemWrite(first, heads[last], partial.get(last, 513))
                      for first, last in expected_runs]
    bench.checker.finish()


def test_without_in_order_max_batch_groups_idx_writes():
    bench = QueueBench(8, max_batch=2)
    heads = [bench.add((), (4,)) for _ in range(5)]
    bench.kick()
    for seq in (4, 1, 0, 3, 2):
        bench.complete(seq, flush=False)
    assert bench.flush() == [
        UsedElemWrite(0, heads[4], 4), UsedElemWrite(1, heads[1], 4), UsedIdxWrite(2),
        UsedNotify(),
        UsedElemWrite(2, heads[0], 4), UsedElemWrite(3, heads[3], 4), UsedIdxWrite(4),
        UsedNotify(),
        UsedElemWrite(4, heads[2], 4), UsedIdxWrite(5), UsedNotify(),
    ]
    bench.checker.finish()


def test_completion_errors_are_refused():
    bench = QueueBench(4)
    bench.add((16,), (8,))
    bench.kick()
    with pytest.raises(ValueError, match="8 device-writable bytes"):
        bench.device.complete(0, 9)
    with pytest.raises(ValueError, match="not in flight"):
        bench.device.complete(1, 0)
    bench.device.complete(0, 8)
    with pytest.raises(ValueError, match="twice"):
        bench.device.complete(0, 8)
    with pytest.raises(ValueError, match="max_batch"):
        SplitVirtqueueDevice(bench.mem, bench.layout, max_batch=0)


# --- Notifications ---------------------------------------------------------------------------

def test_no_interrupt_flag_suppresses_notifications_without_event_idx():
    bench = QueueBench(8)
    for _ in range(3):
        bench.add((16,), (1,))
    bench.kick()
    bench.driver.set_no_interrupt(True)
    assert bench.complete(0) == [UsedElemWrite(0, 0, 1), UsedIdxWrite(1, avail_flags=1)]
    bench.driver.set_no_interrupt(False)
    assert bench.complete(1)[-1] == UsedNotify()
    bench.checker.finish(all_used=False)


def test_event_idx_notifies_only_when_used_event_is_passed():
    bench = QueueBench(8, event_idx=True)
    for _ in range(6):
        bench.add((), (1,))
    elements = bench.kick()
    assert bench.device.writes[0] == AvailEventWrite(6)     # the next entry it wants to hear of
    assert bench.ring.avail_event() == 6
    bench.driver.set_used_event(2)          # "notify me once used->ring[2] is written"
    bench.driver.set_no_interrupt(True)     # ignored with EVENT_IDX (§2.7.7.2)
    notified_after = []
    for element in elements:
        writes = bench.complete(element.seq)
        if UsedNotify() in writes:
            notified_after.append(bench.device.used_idx)
    assert notified_after == [3]
    idx_writes = [w for w in bench.device.writes if isinstance(w, UsedIdxWrite)]
    assert [w.used_event for w in idx_writes] == [2] * 6
    bench.checker.finish()


def test_event_idx_batch_crossing_used_event_notifies_once():
    bench = QueueBench(8, in_order=True, event_idx=True)
    for _ in range(5):
        bench.add((), (1,))
    bench.kick()
    bench.driver.set_used_event(3)
    for seq in (4, 3, 2, 1):
        assert bench.complete(seq) == []
    writes = bench.complete(0)
    assert writes == [UsedElemWrite(0, 4, 1), UsedIdxWrite(5, used_event=3), UsedNotify()]
    bench.checker.finish()


# --- Long runs: index wrap, random completion orders ------------------------------------------

@pytest.mark.parametrize("in_order,event_idx", [(False, False), (True, True)])
def test_more_than_65536_requests_on_a_small_queue(in_order, event_idx):
    """66000 buffers through a 4-entry queue, completed in random order, flushed at random
    points: every 16-bit index wraps. Without EVENT_IDX the driver toggles NO_INTERRUPT at
    random; with it, the driver re-arms used_event at random, and around the wrap asks for
    used_event 65535, which must fire exactly once, on the used->idx write that passes
    index 65535."""
    seed = seed_from_env()
    rng = random.Random(seed)
    total = 66_000
    bench = QueueBench(4, in_order=in_order, event_idx=event_idx)
    added = 0
    wrap_mark = None        # (position in device.writes, used->idx) when used_event = 65535
    while added < total or bench.device.in_flight:
        while added < total and bench.driver.num_free >= 2:
            if rng.random() < 0.8:
                bench.add((), (rng.choice([1, 513]),))
            else:
                bench.add((16,), (1,))
            added += 1
        if event_idx and wrap_mark is None:
            if bench.device.used_idx >= 0xFF00:
                bench.driver.set_used_event(0xFFFF)
                wrap_mark = (len(bench.device.writes), bench.device.used_idx)
            elif rng.random() < 0.5:                # a driver re-arming
                bench.driver.set_used_event(bench.device.used_idx)
        elif not event_idx and rng.random() < 0.1:  # a driver turning callbacks off and on
            bench.driver.set_no_interrupt(rng.random() < 0.5)
        bench.kick()
        assert bench.device.error is None
        pending = sorted(bench.pending)
        rng.shuffle(pending)
        for seq in pending[:rng.randint(1, len(pending))]:
            writable = bench.device.element(seq).writable_len
            written = writable if rng.random() < 0.9 else rng.randrange(writable + 1)
            bench.complete(seq, written, flush=rng.random() < 0.3)
        if bench.pending == set():
            bench.flush()
    report = bench.checker.finish()
    assert report.buffers_used == total
    assert bench.ring.used_idx() == total & 0xFFFF == bench.device.used_idx
    assert bench.device.last_avail_idx == total & 0xFFFF
    assert report.notifications > 0
    if event_idx:
        assert bench.ring.avail_event() == total & 0xFFFF
        position, idx = wrap_mark
        notified = []
        for write in bench.device.writes[position:]:
            if isinstance(write, UsedIdxWrite):
                move, idx = (idx, write.idx), write.idx
            elif isinstance(write, UsedNotify):
                notified.append(move)
        assert len(notified) == 1
        old, new = notified[0]
        assert new < old            # the write that moved used->idx past 65535
    if in_order:
        assert report.mean_run_length > 1.2
    else:
        assert report.run_lengths == (1,) * total


# --- Random scenarios: the exact model always satisfies the checker --------------------------

def test_random_scenarios_model_output_is_legal():
    seed = seed_from_env()
    rng = random.Random(seed)
    for scenario in range(40):
        queue_size = rng.choice([1, 2, 4, 8, 16, 64])
        in_order, event_idx, indirect = (rng.random() < 0.5 for _ in range(3))
        max_batch = rng.choice([None, None, 1, 2, 3])
        bench = QueueBench(queue_size, in_order=in_order, event_idx=event_idx,
                           indirect=indirect, max_batch=max_batch)
        total = rng.randint(1, 150)
        added = 0
        context = (f"scenario {scenario}: size {queue_size} in_order {in_order} "
                   f"event_idx {event_idx} indirect {indirect} max_batch {max_batch}")
        while added < total or bench.device.in_flight:
            while added < total and bench.driver.num_free and rng.random() < 0.8:
                readable = [rng.choice([1, 16, 512]) for _ in range(rng.randint(0, 2))]
                writable = [rng.choice([0, 1, 512, 4096]) for _ in range(rng.randint(0, 2))]
                if not readable and not writable:
                    writable = [1]
                use_indirect = indirect and rng.random() < 0.5
                if not use_indirect and len(readable) + len(writable) > bench.driver.num_free:
                    break
                bench.add(readable, writable, indirect=use_indirect)
                added += 1
            if rng.random() < 0.3:
                if event_idx:
                    bench.driver.set_used_event(bench.device.used_idx + rng.randint(0, 3))
                else:
                    bench.driver.set_no_interrupt(rng.random() < 0.5)
            bench.kick()
            assert bench.device.error is None, context
            for seq in rng.sample(sorted(bench.pending), rng.randint(0, len(bench.pending))):
                writable = bench.device.element(seq).writable_len
                written = writable if rng.random() < 0.8 else rng.randint(0, writable)
                bench.complete(seq, written, flush=rng.random() < 0.5)
            if not bench.pending or rng.random() < 0.3:
                bench.flush()
        report = bench.checker.finish()
        assert report.buffers_used == total, context
        assert bench.ring.used_idx() == total & 0xFFFF, context
        if max_batch == 1 or not in_order:
            assert set(report.run_lengths) == {1}, context
        if in_order and max_batch:
            assert max(report.run_lengths) <= max_batch, context
        # the used ring in memory holds, at every slot, the model's last write to it
        last = {}
        for write in bench.device.writes:
            if isinstance(write, UsedElemWrite):
                last[write.slot] = (write.id, write.len)
        assert all(bench.ring.used_elem(slot) == value for slot, value in last.items()), context


def test_reset_starts_again_from_index_zero():
    bench = QueueBench(4, in_order=True)
    for _ in range(3):
        bench.add((), (1,))
    bench.kick()
    bench.complete(0)
    bench.ring.set_avail_idx(100)           # bad driver input: the queue stops
    bench.device.fetch()
    assert bench.device.error.kind is ErrorKind.AVAIL_IDX_JUMP
    bench.device.reset()
    assert (bench.device.error, bench.device.in_flight, bench.device.used_idx,
            bench.device.last_avail_idx, bench.device.writes) == (None, 0, 0, 0, [])
    driver = RingDriver(bench.ring, in_order=True)      # the driver sets the queue up again
    head = driver.add([(0x9000, 4, True)])
    driver.publish()
    (element,) = bench.device.fetch()
    assert (element.seq, element.avail_idx, element.head) == (0, 0, head)
    bench.device.complete(0, 4)
    assert bench.device.flush()[0] == UsedElemWrite(0, head, 4)


# --- The checker rejects what a correct device cannot do -------------------------------------

def checker_with(in_order, *, written=(8, 8, 8, 8), event_idx=False, complete=True, **options):
    """Four buffers with heads 0, 2, 4, 6 of 8 writable bytes each, completed in avail order
    with the ``written`` lengths."""
    checker = UsedRingChecker(8, in_order=in_order, event_idx=event_idx, **options)
    for i in range(4):
        checker.available(2 * i, 8)
    if complete:
        for i, n in enumerate(written):
            checker.completed(i, n)
    return checker


VIOLATIONS = {
    "unknown id": (False, [UsedElemWrite(0, 5, 8), UsedIdxWrite(1)], "no outstanding"),
    "wrong len": (False, [UsedElemWrite(0, 0, 7), UsedIdxWrite(1)], "has len 7"),
    "stale slot": (False, [UsedIdxWrite(1)], "was not written"),
    "idx not advancing": (False, [UsedElemWrite(0, 0, 8), UsedIdxWrite(0)], "without advancing"),
    "idx beyond outstanding": (False, [UsedElemWrite(0, 0, 8), UsedIdxWrite(5)],
                               "only 4 buffers"),
    "slot out of range": (False, [UsedElemWrite(8, 0, 8)], "slot 8"),
    "used twice": (False, [UsedElemWrite(0, 0, 8), UsedIdxWrite(1), UsedNotify(),
                           UsedElemWrite(1, 0, 8), UsedIdxWrite(2)], "no outstanding"),
    "spurious notification": (False, [UsedNotify()], "no used->idx write asked"),
    "not in completion order": (False, [UsedElemWrite(0, 2, 8), UsedIdxWrite(1)],
                                "completed before it"),
    "run longer than idx": (True, [UsedElemWrite(0, 4, 8), UsedIdxWrite(1)], "covers only 1"),
    "run entry at its last slot": (True, [UsedElemWrite(2, 4, 8), UsedIdxWrite(3)],
                                   "was not written"),
    "in-order used twice": (True, [UsedElemWrite(0, 0, 8), UsedIdxWrite(1), UsedNotify(),
                                   UsedElemWrite(1, 0, 8), UsedIdxWrite(2)], "no outstanding"),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
def test_checker_rejects(case):
    in_order, writes, message = VIOLATIONS[case]
    checker = checker_with(in_order)
    with pytest.raises(UsedRingViolation, match=message):
        checker.observe_all(writes)


def test_checker_rejects_skipping_a_partly_written_buffer():
    checker = checker_with(True, written=(8, 3, 8, 8))
    with pytest.raises(UsedRingViolation, match="skipped inside a run"):
        checker.observe_all([UsedElemWrite(0, 4, 8), UsedIdxWrite(3)])


def test_checker_rejects_use_before_completion():
    checker = checker_with(False, complete=False)
    with pytest.raises(UsedRingViolation, match="before the backend completed"):
        checker.observe_all([UsedElemWrite(0, 0, 0), UsedIdxWrite(1)])


def test_checker_finish_rejects_leftovers():
    checker = checker_with(False)
    checker.observe_all([UsedElemWrite(0, 0, 8), UsedIdxWrite(1)])
    with pytest.raises(UsedRingViolation, match="never sent"):
        checker.finish(all_used=False)
    checker.notified()
    with pytest.raises(UsedRingViolation, match="3 buffers never used"):
        checker.finish()
    checker.elem_written(1, 2, 8)
    with pytest.raises(UsedRingViolation, match="never covered"):
        checker.finish(all_used=False)


def test_checker_finish_rejects_stale_avail_event():
    checker = checker_with(True, event_idx=True)
    checker.avail_event_written(3)
    checker.observe_all([UsedElemWrite(0, 6, 8), UsedIdxWrite(4, used_event=9)])
    with pytest.raises(UsedRingViolation, match="avail_event is 3"):
        checker.finish()
    checker.avail_event_written(4)
    assert checker.finish().run_lengths == (4,)
    with pytest.raises(ValueError, match="used_event"):
        checker_with(False, event_idx=True).observe_all([UsedElemWrite(0, 0, 8),
                                                         UsedIdxWrite(1)])


def test_checker_accepts_other_legal_batchings():
    # several runs under one idx write, and the same buffers one per entry
    checker = checker_with(True)
    assert checker.observe_all([UsedElemWrite(0, 2, 8), UsedElemWrite(2, 6, 8),
                                UsedIdxWrite(4), UsedNotify()]) == [0, 1, 2, 3]
    assert checker.finish().run_lengths == (2, 2)
    checker = checker_with(True)
    for i in range(4):
        checker.observe_all([UsedElemWrite(i, 2 * i, 8), UsedIdxWrite(i + 1)])
    checker.notified()                      # one notification may cover several idx writes
    assert checker.finish().notifications == 1
    # without the completion-order contract, any order is legal (the spec's minimum)
    checker = checker_with(False, require_completion_order=False)
    checker.observe_all([UsedElemWrite(0, 6, 8), UsedElemWrite(1, 0, 8), UsedIdxWrite(2),
                         UsedNotify()])
    # tolerated spurious notifications are counted
    checker = checker_with(False, strict_notifications=False)
    checker.notified()
    assert checker.finish(all_used=False).spurious_notifications == 1
