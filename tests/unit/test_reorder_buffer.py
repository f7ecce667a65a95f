"""Amaranth-simulator tests of hdl/virtio/reorder_buffer.py.

Every test drives the ports cycle by cycle through :class:`Bench`, which also feeds the
scoreboard (golden model + port contract), so each scenario is checked against the model on
top of its own explicit assertions.
"""
import os
import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from hdl.virtio.reorder_buffer import ReorderBuffer, used_elem_layout
from sim.layout import pack, unpack
from sim.scoreboard.reorder import ReorderScoreboard


def _seed() -> int:
    seed = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    print(f"SEED={seed}")
    return seed


class Bench:
    """One ReorderBuffer, its scoreboard, and a per-cycle port driver.

    A test is an ``async def scenario(bench)`` that calls :meth:`cycle` once per clock;
    :meth:`run` builds the simulator and runs it.
    """

    def __init__(self, depth=8, *, max_run=None, bypass=False, payload_layout=used_elem_layout):
        self.dut = ReorderBuffer(depth=depth, max_run=max_run, payload_layout=payload_layout)
        self.depth = depth
        self.bypass = bypass
        self.sb = ReorderScoreboard(depth, max_run=self.dut.max_run, bypass=bypass)
        self.ctx = None
        self.retired = []           # (seq, payload dict, last) for every retire transfer
        self.allocated = []         # every seq handed out
        self.cycle_no = 0

    def payload(self, **fields) -> int:
        return pack(self.dut.payload_layout, fields)

    async def cycle(self, *, alloc_ready=0, complete=None, retire_ready=0, flush=0) -> dict:
        """Drive one clock: ``complete`` is ``(seq, payload_int)`` or None. Returns what the
        outputs showed in this cycle and which transfers happened at its end."""
        ctx, dut = self.ctx, self.dut
        ctx.set(dut.alloc.ready, alloc_ready)
        ctx.set(dut.retire.ready, retire_ready)
        ctx.set(dut.flush, flush)
        ctx.set(dut.complete.valid, complete is not None)
        if complete is not None:
            ctx.set(dut.complete.payload.seq, complete[0])
            ctx.set(dut.complete.payload.payload.as_value(), complete[1])
        out = {
            "alloc_valid": ctx.get(dut.alloc.valid),
            "alloc_seq": ctx.get(dut.alloc.payload),
            "retire_valid": ctx.get(dut.retire.valid),
            "retire_seq": ctx.get(dut.retire.payload.seq),
            "retire_payload": ctx.get(dut.retire.payload.payload.as_value()),
            "retire_last": ctx.get(dut.retire.payload.last),
            "busy": ctx.get(dut.busy),
            "error": ctx.get(dut.error),
            "error_seq": ctx.get(dut.error_seq),
            "complete_ready": ctx.get(dut.complete.ready),
        }
        assert out["complete_ready"] == 1, "complete must always be ready"
        self.sb.cycle(alloc_valid=out["alloc_valid"], alloc_seq=out["alloc_seq"],
                      alloc_ready=alloc_ready, complete_valid=complete is not None,
                      complete_seq=complete[0] if complete else 0,
                      complete_payload=complete[1] if complete else 0,
                      retire_valid=out["retire_valid"], retire_seq=out["retire_seq"],
                      retire_payload=out["retire_payload"], retire_last=out["retire_last"],
                      retire_ready=retire_ready, flush=flush, busy=out["busy"],
                      error=out["error"], error_seq=out["error_seq"])
        out["alloc_taken"] = out["alloc_valid"] and alloc_ready
        out["retire_taken"] = out["retire_valid"] and retire_ready
        if out["alloc_taken"]:
            self.allocated.append(out["alloc_seq"])
        if out["retire_taken"]:
            self.retired.append((out["retire_seq"],
                                 unpack(self.dut.payload_layout, out["retire_payload"]),
                                 out["retire_last"]))
        await ctx.tick()
        self.cycle_no += 1
        return out

    async def wait_idle(self):
        """Let the post-reset (or post-flush) clearing finish."""
        for _ in range(self.depth + 2):
            out = await self.cycle()
            if not out["busy"]:
                return
        raise AssertionError("busy did not fall within depth + 2 cycles")

    async def alloc(self, count):
        """Allocate ``count`` seqs back to back; return them."""
        seqs = []
        while len(seqs) < count:
            out = await self.cycle(alloc_ready=1)
            assert out["alloc_valid"], "alloc stalled below the credit"
            seqs.append(out["alloc_seq"])
        return seqs

    def run(self, scenario, *, max_cycles=200_000):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)

        async def tb(ctx):
            self.ctx = ctx
            await self.wait_idle()
            await scenario(self)
            self.sb.finish()

        sim.add_testbench(tb)
        sim.run()


def _payload(bench, seq):
    """A payload that differs per seq, so a mix-up shows."""
    return bench.payload(id=(seq * 7 + 3) & 0xFFFF, len=(seq * 1000 + 17) & 0xFFFFFFFF)


# --- scenarios --------------------------------------------------------------------------------

def test_empty():
    """After reset: busy for depth cycles, then alloc offers 0 and nothing retires."""
    bench = Bench(depth=8)

    async def scenario(b):
        for _ in range(20):
            out = await b.cycle(retire_ready=1)
            assert not out["retire_valid"] and not out["busy"] and not out["error"]
            assert out["alloc_valid"] and out["alloc_seq"] == 0
    bench.run(scenario)
    assert bench.retired == []


def test_in_order_stream_latency_two():
    """Completions of the expected seq, one per clock, retire two cycles later, 1/clock."""
    bench = Bench(depth=16)

    async def scenario(b):
        seqs = await b.alloc(16)
        offered_at = {}
        accepted_at = {}
        pending = list(seqs)
        for _ in range(40):
            comp = None
            if pending:
                s = pending.pop(0)
                comp = (s, _payload(b, s))
                accepted_at[s] = b.cycle_no
            out = await b.cycle(complete=comp, retire_ready=1)
            if out["retire_valid"]:
                offered_at.setdefault(out["retire_seq"], b.cycle_no - 1)
        assert [s for s, _, _ in b.retired] == seqs
        for s in seqs:
            assert offered_at[s] - accepted_at[s] == 2, f"seq {s} latency"
    bench.run(scenario)


def test_full_alloc_stalls_at_depth():
    """alloc hands out exactly depth seqs, then stalls until one retires."""
    bench = Bench(depth=4)

    async def scenario(b):
        seqs = await b.alloc(4)
        assert seqs == [0, 1, 2, 3]
        for _ in range(5):
            out = await b.cycle(alloc_ready=1)
            assert not out["alloc_valid"]
        await b.cycle(complete=(0, _payload(b, 0)))
        for _ in range(3):
            out = await b.cycle(alloc_ready=1)
            assert not out["alloc_valid"], "credit returned before the retire"
        out = await b.cycle(retire_ready=1)
        assert out["retire_taken"] and out["retire_seq"] == 0
        out = await b.cycle(alloc_ready=1)
        assert out["alloc_taken"] and out["alloc_seq"] == 4
    bench.run(scenario)


def test_counter_wrap_reverse_order():
    """Many laps of the 2*depth seq space, each batch completed in reverse order."""
    bench = Bench(depth=4)

    async def scenario(b):
        expected = []
        for _ in range(10):
            seqs = await b.alloc(4)
            expected += seqs
            for s in reversed(seqs):
                await b.cycle(complete=(s, _payload(b, s)))
            for _ in range(8):
                await b.cycle(retire_ready=1)
        assert [s for s, _, _ in b.retired] == expected
        assert expected[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]
        assert all(p == unpack(used_elem_layout, _payload(b, s)) for s, p, _ in b.retired)
    bench.run(scenario)


def test_duplicate_completion():
    """A second completion of a waiting seq raises error with its seq and is dropped."""
    bench = Bench(depth=8)

    async def scenario(b):
        await b.alloc(3)
        await b.cycle(complete=(2, _payload(b, 2)))
        await b.cycle(complete=(2, b.payload(id=0xBAD, len=0xBAD)))
        await b.cycle()
        out = await b.cycle()
        assert out["error"] and out["error_seq"] == 2
        await b.cycle(complete=(0, _payload(b, 0)))
        await b.cycle(complete=(1, _payload(b, 1)))
        for _ in range(6):
            await b.cycle(retire_ready=1)
        out = await b.cycle(complete=(1, _payload(b, 1)))  # 1 is retired: not in flight
        for _ in range(3):
            out = await b.cycle(retire_ready=1)
        assert out["error"] and out["error_seq"] == 2, "error must keep the first seq"
    bench.run(scenario)
    assert [s for s, _, _ in bench.retired] == [0, 1, 2]
    assert bench.retired[2][1] == unpack(used_elem_layout, _payload(bench, 2))


def test_unknown_completion():
    """A completion for a seq never allocated raises error and is never retired."""
    bench = Bench(depth=8)

    async def scenario(b):
        await b.alloc(2)
        await b.cycle(complete=(5, _payload(b, 5)))
        for _ in range(3):
            out = await b.cycle(retire_ready=1)
        assert out["error"] and out["error_seq"] == 5
        assert not out["retire_valid"]
        await b.alloc(4)                    # 2..5: 5 is allocated now, still not completed
        await b.cycle(complete=(0, _payload(b, 0)))
        await b.cycle(complete=(1, _payload(b, 1)))
        for _ in range(10):
            out = await b.cycle(retire_ready=1)
        assert not out["retire_valid"]
    bench.run(scenario)
    assert [s for s, _, _ in bench.retired] == [0, 1]


def test_flush_mid_traffic():
    """Flush with elements waiting, on output and in flight; numbering restarts at 0."""
    bench = Bench(depth=8)

    async def scenario(b):
        await b.alloc(6)
        for s in (0, 1, 3, 4):
            await b.cycle(complete=(s, _payload(b, s)))
        await b.cycle(complete=(9, 0))       # an error, cleared by the flush
        out = await b.cycle(flush=1, complete=(5, _payload(b, 5)))
        assert out["retire_valid"]
        out = await b.cycle()
        assert out["busy"] and not out["retire_valid"] and not out["alloc_valid"]
        assert not out["error"]
        for _ in range(7):
            out = await b.cycle(complete=(2, _payload(b, 2)))   # discarded while busy
            assert out["busy"]
        out = await b.cycle(retire_ready=1)
        assert not out["busy"] and out["alloc_valid"] and out["alloc_seq"] == 0
        seqs = await b.alloc(3)
        assert seqs == [0, 1, 2]
        for s in seqs:
            await b.cycle(complete=(s, _payload(b, s)))
        for _ in range(5):
            await b.cycle(retire_ready=1)
        out = await b.cycle()
        assert not out["error"]
    bench.run(scenario)
    assert [s for s, _, _ in bench.retired] == [0, 1, 2]


def test_run_markers():
    """last follows the rule: next completed two cycles before the offer, run < max_run."""
    bench = Bench(depth=16, max_run=3)

    async def scenario(b):
        await b.alloc(10)
        # 1..7 complete first, then 0: a run 0..7 is ready, split by max_run = 3.
        for s in range(1, 8):
            await b.cycle(complete=(s, _payload(b, s)))
        await b.cycle(complete=(0, _payload(b, 0)))
        for _ in range(12):
            await b.cycle(retire_ready=1)
        # 8 alone, then 9 arriving a cycle later: 8 cannot know about 9 in time.
        await b.cycle(complete=(8, _payload(b, 8)))
        await b.cycle(complete=(9, _payload(b, 9)))
        for _ in range(6):
            await b.cycle(retire_ready=1)
    bench.run(scenario)
    lasts = [last for _, _, last in bench.retired]
    assert [s for s, _, _ in bench.retired] == list(range(10))
    assert lasts == [0, 0, 1, 0, 0, 1, 0, 1, 1, 1]


def test_run_marker_max_run_one():
    bench = Bench(depth=8, max_run=1)

    async def scenario(b):
        await b.alloc(6)
        for s in (5, 4, 3, 2, 1, 0):
            await b.cycle(complete=(s, _payload(b, s)))
        for _ in range(10):
            await b.cycle(retire_ready=1)
    bench.run(scenario)
    assert [last for _, _, last in bench.retired] == [1] * 6


def test_bypass_arrival_order():
    """Without IN_ORDER, completions retire in arrival order through the same ports."""
    bench = Bench(depth=8, bypass=True)

    async def scenario(b):
        b.ctx.set(b.dut.bypass, 1)
        await b.cycle()
        await b.alloc(6)
        order = [3, 0, 5, 1, 4, 2]
        for s in order:
            await b.cycle(complete=(s, _payload(b, s)))
        for _ in range(10):
            await b.cycle(retire_ready=1)
        assert [s for s, _, _ in b.retired] == order
        await b.cycle(complete=(3, 0))       # retired already: an error in bypass too
        for _ in range(3):
            out = await b.cycle()
        assert out["error"] and out["error_seq"] == 3
    bench.run(scenario)


def test_backpressure_holds_retire():
    """A retire offer stays put (payload and last) while not taken; nothing is lost."""
    bench = Bench(depth=8)

    async def scenario(b):
        await b.alloc(8)
        for s in range(8):
            await b.cycle(complete=(s, _payload(b, s)))
        for i in range(60):
            await b.cycle(retire_ready=int(i % 7 == 3))
        for _ in range(10):
            await b.cycle(retire_ready=1)
    bench.run(scenario)
    assert [s for s, _, _ in bench.retired] == list(range(8))


@pytest.mark.parametrize("depth,bypass", [(2, False), (4, False), (16, False), (8, True)])
def test_random_traffic(depth, bypass):
    """Random completion order and back-pressure on alloc and retire, checked by the
    scoreboard cycle by cycle."""
    seed = _seed()
    rng = random.Random(seed)
    bench = Bench(depth=depth, bypass=bypass, max_run=rng.choice([None, 1, 3]))

    async def scenario(b):
        b.ctx.set(b.dut.bypass, int(bypass))
        await b.cycle()
        outstanding = []
        for _ in range(3000):
            comp = None
            if outstanding and rng.random() < 0.6:
                idx = 0 if rng.random() < 0.3 else rng.randrange(len(outstanding))
                s = outstanding.pop(idx)
                comp = (s, rng.getrandbits(48))
            out = await b.cycle(alloc_ready=int(rng.random() < 0.7), complete=comp,
                                retire_ready=int(rng.random() < 0.7))
            if out["alloc_taken"]:
                outstanding.append(out["alloc_seq"])
        while outstanding:
            s = outstanding.pop()
            await b.cycle(complete=(s, rng.getrandbits(48)), retire_ready=1)
        for _ in range(depth + 8):
            await b.cycle(retire_ready=1)
        assert b.sb.stats.retires == b.sb.stats.allocs
    bench.run(scenario)
    assert bench.sb.stats.retires > 500


def test_bad_parameters():
    with pytest.raises(ValueError, match="power of two"):
        ReorderBuffer(depth=12)
    with pytest.raises(ValueError, match="power of two"):
        ReorderBuffer(depth=1)
    with pytest.raises(ValueError, match="power of two"):
        ReorderBuffer(depth=8192)
    with pytest.raises(TypeError, match="depth must be an integer"):
        ReorderBuffer(depth=8.0)
    with pytest.raises(TypeError, match="payload_layout"):
        ReorderBuffer(payload_layout=48)
    with pytest.raises(ValueError, match="at least 1 bit"):
        ReorderBuffer(payload_layout=data.StructLayout({}))
    with pytest.raises(ValueError, match="max_run"):
        ReorderBuffer(max_run=0)
    with pytest.raises(ValueError, match="max_run"):
        ReorderBuffer(max_run=40000)
    with pytest.raises(TypeError, match="max_run"):
        ReorderBuffer(max_run="4")


def test_seq_width():
    assert ReorderBuffer(depth=2).seq_width == 2
    assert ReorderBuffer(depth=256).seq_width == 9
    assert ReorderBuffer(depth=4096).seq_width == 13
    assert ReorderBuffer(depth=256).max_run == 256
