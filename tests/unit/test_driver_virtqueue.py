"""The driver's split virtqueue (sim/driver/virtqueue.py) against the golden device model.

Closed loop, no simulator: the driver adds buffers and the device model
(``SplitVirtqueueDevice``) fetches them *only* when ``kick_prepare`` asked for a doorbell;
the model completes them in random order and the driver reaps them *only* when the model
sent a used buffer notification. A driver that suppressed a needed kick or interrupt
leaves buffers behind and the test fails at the end; a driver that misreads the used ring
returns the wrong token or length. Randomised; ``SEED=`` replays.
"""
import os
import random

import pytest

from hdl.virtio.spec import VirtqAvailFlags, VirtqUsedFlags, vring_need_event
from sim.driver.memory import DmaKind, HostMemory
from sim.driver.virtqueue import NoSpace, SplitVirtqueue, VirtqueueBroken
from sim.model.virtqueue import SplitVirtqueueDevice, UsedNotify

SEED = int(os.environ.get("SEED") or random.randrange(2**31))
print(f"SEED={SEED}")


class Loop:
    """A driver queue and a device model on the same memory, wired by kicks and notifications."""

    def __init__(self, rng, size, *, in_order, event_idx, indirect, max_batch=None):
        self.rng = rng
        self.mem = HostMemory(0x10_0000, 8 << 20)
        self.reaped = []
        self.vq = SplitVirtqueue(self.mem, 0, size, in_order=in_order, event_idx=event_idx,
                                 indirect=indirect, callback=self.virtblk_done)
        self.dev = SplitVirtqueueDevice(self.mem, self.vq.layout, in_order=in_order,
                                        event_idx=event_idx, indirect_desc=indirect,
                                        max_batch=max_batch)
        self.added = {}             # token -> (pieces, head)
        self.unfetched = {}         # head -> token, added and not yet fetched
        self.device_heads = []      # heads in the order the device fetched them
        self.in_flight = {}         # seq -> (token, element)
        self.completed_len = {}     # token -> written length
        self.completion_order = []
        self.notifications = 0
        self.doorbells = 0
        self.next_token = 0
        self.pool = [self.mem.alloc(64) for _ in range(16)]   # buffers (contents unused)

    def virtblk_done(self, vq):
        while True:
            vq.disable_cb()
            while (got := vq.get_buf()) is not None:
                self.reaped.append(got)
            if vq.enable_cb():
                break

    def add_random(self, max_out=3, max_in=3):
        n_out = self.rng.randint(0, max_out)
        n_in = self.rng.randint(0 if n_out else 1, max_in)
        out = [(self.rng.choice(self.pool), self.rng.randint(1, 64)) for _ in range(n_out)]
        in_ = [(self.rng.choice(self.pool), self.rng.randint(1, 64)) for _ in range(n_in)]
        token = self.next_token
        head = self.vq.add(out, in_, token)
        self.next_token += 1
        self.added[token] = ([(a, n, False) for a, n in out] + [(a, n, True) for a, n in in_],
                             head)
        self.unfetched[head] = token
        return token, head

    def kick(self):
        if self.vq.kick_prepare():
            self.doorbells += 1
            for element in self.dev.fetch():
                token = self.unfetched.pop(element.head)
                pieces, _ = self.added[token]
                got = [(d.addr, d.len, d.write) for d in element.descriptors]
                assert got == pieces, f"device saw {got}, driver added {pieces}"
                self.in_flight[element.seq] = (token, element)
                self.device_heads.append(element.head)
            self.deliver(self.dev.writes)
            self.dev.writes.clear()

    def complete_random(self, count):
        for seq in self.rng.sample(sorted(self.in_flight), min(count, len(self.in_flight))):
            token, element = self.in_flight.pop(seq)
            written = element.writable_len if self.rng.random() < 0.8 \
                else self.rng.randint(0, element.writable_len)
            self.dev.complete(seq, written)
            self.completed_len[token] = written
            self.completion_order.append(token)
        self.deliver(self.dev.flush())
        self.dev.writes.clear()

    def deliver(self, writes):
        if any(isinstance(w, UsedNotify) for w in writes):
            self.notifications += 1
            self.vq.interrupt()


CASES = [(in_order, event_idx, indirect) for in_order in (False, True)
         for event_idx in (False, True) for indirect in (False, True)]


@pytest.mark.parametrize("in_order,event_idx,indirect", CASES)
@pytest.mark.parametrize("size", [1, 8, 64])
def test_closed_loop(size, in_order, event_idx, indirect):
    rng = random.Random(SEED + size)
    loop = Loop(rng, size, in_order=in_order, event_idx=event_idx, indirect=indirect,
                max_batch=rng.choice([None, 3]))
    for _ in range(600):
        for _ in range(rng.randint(0, 4)):
            try:
                loop.add_random()
            except NoSpace:
                break
        loop.kick()
        loop.complete_random(rng.randint(0, 5))
    while loop.in_flight or loop.vq.outstanding:
        loop.kick()
        loop.complete_random(len(loop.in_flight))
        if not loop.in_flight and loop.vq.outstanding and not loop.dev.in_flight:
            # Everything the device has is done, yet buffers are outstanding: they were
            # never fetched (a missed kick) or never reaped (a missed interrupt).
            loop.kick()
            assert not loop.vq.outstanding or loop.in_flight, \
                f"{loop.vq.outstanding} buffers stuck: kick or interrupt suppressed wrongly"
    tokens = [t for t, _ in loop.reaped]
    assert sorted(tokens) == list(range(loop.next_token)), "a buffer lost or returned twice"
    for token, length in loop.reaped:
        assert length == loop.completed_len[token]
    if in_order:
        assert tokens == sorted(tokens), "IN_ORDER buffers must come back in avail order"
    else:
        assert tokens == loop.completion_order, "used ring order is completion order"
    assert loop.vq.num_free == size
    stats = loop.vq.stats
    assert stats.buffers == loop.next_token
    assert stats.kicks == loop.doorbells
    assert stats.interrupts <= loop.notifications
    if in_order and size > 1:
        assert stats.used_entries < stats.buffers, "no batching seen with IN_ORDER"
    if event_idx:
        assert stats.kicks_suppressed > 0


@pytest.mark.parametrize("indirect", [False, True])
def test_in_order_uses_descriptors_in_ring_order(indirect):
    """§2.7.9: with IN_ORDER descriptors are used sequentially, next = x + 1, wrapping."""
    rng = random.Random(SEED)
    loop = Loop(rng, 16, in_order=True, event_idx=False, indirect=indirect)
    expected_head = 0
    for _ in range(200):
        try:
            token, head = loop.add_random()
        except NoSpace:
            loop.kick()
            loop.complete_random(16)
            continue
        assert head == expected_head
        pieces, _ = loop.added[token]
        used = 1 if indirect and len(pieces) > 1 else len(pieces)
        chain = []
        i = head
        while True:
            chain.append(i)
            desc = loop.vq.ring.desc(i)
            if not desc.flags & 1:
                break
            assert desc.next == (i + 1) % 16
            i = desc.next
        assert len(chain) == used
        expected_head = (head + used) % 16
        loop.kick()
        loop.complete_random(rng.randint(0, 3))


def test_free_list_reuses_descriptors_like_linux():
    """Without IN_ORDER a used chain goes back to the front of the free list."""
    mem = HostMemory(0x1000, 1 << 20)
    vq = SplitVirtqueue(mem, 0, 8, callback=lambda q: None)
    buf = mem.alloc(64)
    assert vq.add([(buf, 16)], [(buf, 1)], "a") == 0        # descriptors 0, 1
    assert vq.add([(buf, 16)], [(buf, 1)], "b") == 2        # descriptors 2, 3
    vq.ring.set_used_elem(0, 0, 1)
    vq.ring.set_used_idx(1)
    assert vq.get_buf() == ("a", 1)
    assert vq.add([(buf, 16)], [], "c") == 0                # the freed chain comes first
    assert vq.add([(buf, 16)], [], "d") == 1
    assert vq.add([(buf, 16)], [], "e") == 4
    assert vq.num_free == 3


@pytest.mark.parametrize("in_order", [False, True])
def test_index_wrap_beyond_65536(in_order):
    """avail->idx, used->idx and the driver's shadows wrap at 2^16 (§2.7.13.3)."""
    rng = random.Random(SEED)
    loop = Loop(rng, 4, in_order=in_order, event_idx=True, indirect=True)
    for _ in range(70_000 // 4):
        for _ in range(4):
            loop.add_random(max_out=0, max_in=1)
        loop.kick()
        loop.complete_random(4)
    assert loop.vq.stats.buffers == loop.next_token == 70_000
    assert [t for t, _ in loop.reaped] == list(range(70_000)) if in_order \
        else sorted(t for t, _ in loop.reaped) == list(range(70_000))
    assert loop.vq.avail_idx_shadow == 70_000 & 0xFFFF
    assert loop.vq.last_used_idx == 70_000 & 0xFFFF


def test_kick_prepare_follows_the_spec():
    mem = HostMemory(0x1000, 1 << 20)
    buf = mem.alloc(64)
    vq = SplitVirtqueue(mem, 0, 8, callback=lambda q: None)
    vq.add([(buf, 8)], [], 1)
    assert vq.kick_prepare()
    mem.write_u16(vq.layout.used_flags, int(VirtqUsedFlags.NO_NOTIFY))
    vq.add([(buf, 8)], [], 2)
    assert not vq.kick_prepare()
    ev = SplitVirtqueue(mem, 1, 8, event_idx=True, callback=lambda q: None)
    for avail_event in range(0, 6):
        mem.write_u16(ev.layout.avail_event, avail_event)
        old = ev.avail_idx_shadow
        ev.add([(buf, 8)], [], 10 + avail_event)
        ev.add([(buf, 8)], [], 20 + avail_event)
        assert ev.kick_prepare() == vring_need_event(avail_event, old + 2, old)
        ev.detach_unused_buf()


def test_interrupt_suppression_fields():
    mem = HostMemory(0x1000, 1 << 20)
    vq = SplitVirtqueue(mem, 0, 8, callback=lambda q: None)
    vq.disable_cb()
    assert vq.ring.avail_flags() == int(VirtqAvailFlags.NO_INTERRUPT)
    assert vq.enable_cb()
    assert vq.ring.avail_flags() == 0
    silent = SplitVirtqueue(mem, 1, 8)       # no callback: interrupts off from the start
    assert silent.ring.avail_flags() == int(VirtqAvailFlags.NO_INTERRUPT)
    ev = SplitVirtqueue(mem, 2, 8, event_idx=True, callback=lambda q: None)
    buf = mem.alloc(64)
    ev.add([], [(buf, 4)], "x")
    ev.ring.set_used_elem(0, 0, 4)
    ev.ring.set_used_idx(1)
    ev.disable_cb()
    assert ev.ring.used_event() == 0
    assert not ev.enable_cb(), "a used entry is waiting: enable_cb must say so"
    assert ev.get_buf() == ("x", 4)
    assert ev.ring.used_event() == 1
    assert ev.enable_cb()


def test_spurious_interrupt_is_irq_none():
    mem = HostMemory(0x1000, 1 << 20)
    calls = []
    vq = SplitVirtqueue(mem, 0, 4, callback=calls.append)
    assert not vq.interrupt()
    assert vq.stats.spurious_interrupts == 1 and not calls


@pytest.mark.parametrize("in_order", [False, True])
def test_bad_used_ring_breaks_the_queue(in_order):
    mem = HostMemory(0x1000, 1 << 20)
    buf = mem.alloc(64)
    vq = SplitVirtqueue(mem, 0, 8, in_order=in_order, callback=lambda q: None)
    vq.add([], [(buf, 4)], "a")
    vq.add([], [(buf, 4)], "b")
    vq.ring.set_used_elem(0, 5, 0)           # 5 is no outstanding head
    vq.ring.set_used_idx(1)
    with pytest.raises(VirtqueueBroken):
        vq.get_buf()
    with pytest.raises(VirtqueueBroken):
        vq.add([], [(buf, 4)], "c")


def test_in_order_run_longer_than_used_idx_advance_is_refused():
    mem = HostMemory(0x1000, 1 << 20)
    buf = mem.alloc(64)
    vq = SplitVirtqueue(mem, 0, 8, in_order=True, callback=lambda q: None)
    heads = [vq.add([], [(buf, 4)], t) for t in "abc"]
    vq.ring.set_used_elem(0, heads[2], 4)    # a run of three ...
    vq.ring.set_used_idx(2)                  # ... but used->idx moved by two
    with pytest.raises(VirtqueueBroken):
        vq.get_buf()


def test_in_order_batch_returns_every_buffer():
    mem = HostMemory(0x1000, 1 << 20)
    buf = mem.alloc(64)
    vq = SplitVirtqueue(mem, 0, 16, in_order=True, callback=lambda q: None)
    heads = [vq.add([(buf, 16)], [(buf, 8), (buf, 1)], t) for t in "abcd"]
    vq.ring.set_used_elem(0, heads[2], 5)    # one element returns a, b, c; c wrote 5 bytes
    vq.ring.set_used_idx(3)
    assert [vq.get_buf() for _ in range(4)] == [("a", 9), ("b", 9), ("c", 5), None]
    assert vq.stats.used_entries == 1 and vq.stats.run_lengths[3] == 1
    assert vq.last_used_idx == 3


def test_used_length_beyond_buffer_is_refused():
    mem = HostMemory(0x1000, 1 << 20)
    buf = mem.alloc(64)
    vq = SplitVirtqueue(mem, 0, 8, callback=lambda q: None)
    vq.add([(buf, 16)], [(buf, 1)], "a")
    vq.ring.set_used_elem(0, 0, 2)
    vq.ring.set_used_idx(1)
    with pytest.raises(VirtqueueBroken):
        vq.get_buf()


def test_indirect_table_is_freed_and_classified():
    mem = HostMemory(0x1000, 1 << 20)
    buf = mem.alloc(64)
    before = mem.in_use
    vq = SplitVirtqueue(mem, 0, 8, indirect=True, callback=lambda q: None)
    ring_bytes = mem.in_use - before
    vq.add([(buf, 16)], [(buf, 1)], "a")
    table = vq.ring.desc(0).addr
    assert mem.allocation_at(table).kind is DmaKind.INDIRECT
    assert mem.allocation_at(vq.layout.used_idx).kind is DmaKind.RING
    vq.ring.set_used_elem(0, 0, 1)
    vq.ring.set_used_idx(1)
    assert vq.get_buf() == ("a", 1)
    assert mem.in_use - before == ring_bytes


def test_host_memory_allocator():
    mem = HostMemory(0x1000, 4096)
    a = mem.alloc(100, align=64)
    b = mem.alloc(100, align=64, slack=64)
    c = mem.alloc(10)
    assert a % 64 == 0 and b % 64 == 0 and b >= a + 100
    assert c + 10 <= b or c >= b + 164, "the slack behind b stays free"
    mem.free(b)
    assert mem.alloc(100, align=64) == b
    mem.free(a)
    mem.free(c)
    with pytest.raises(ValueError):
        mem.free(c)
    big = mem.alloc(3000)
    with pytest.raises(MemoryError):
        mem.alloc(2000)
    mem.free(big)
    mem.free(b)
    assert mem.in_use == 0 and mem.alloc(4096) == 0x1000
