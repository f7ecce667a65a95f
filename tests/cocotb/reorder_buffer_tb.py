"""cocotb testbench of the ReorderBuffer (run through sim.runner by test_reorder_buffer.py).

The toplevel is :class:`reorder_buffer_top.PackedReorderBuffer`: the buffer with all inputs
in one vector (``drive``) and all outputs in another (``sample``). One coroutine does
everything, once per clock at the falling edge: it reads ``sample`` (every output is
registered, so it already holds what the next rising edge will see), decides the inputs for
that edge at random (alloc and retire back-pressure, which outstanding seq to complete, an
occasional flush), writes ``drive``, and hands the cycle to the scoreboard, which checks it
against the golden model entry by entry.

Settings come from the environment (set by the pytest wrapper): ``RB_COMPLETIONS``,
``RB_BYPASS``, ``RB_FLUSH_EVERY`` (mean cycles between flushes, 0 = never), and
``RB_P_ALLOC``/``RB_P_COMPLETE``/``RB_P_RETIRE`` (per-cycle probabilities; a negative value
draws a new one every 4096 cycles). Python's ``random`` is seeded by cocotb from ``SEED``.
"""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from reorder_buffer_top import PackedReorderBuffer
from sim.scoreboard.reorder import ReorderScoreboard


class Field:
    """Offset and mask of one field of a packed vector."""

    def __init__(self, layout, *path):
        offset = 0
        for name in path:
            field = layout[name]
            offset += field.offset
            layout = field.shape
        self.shift = offset
        self.mask = (1 << field.width) - 1

    def get(self, value: int) -> int:
        return (value >> self.shift) & self.mask


class TB:
    def __init__(self, dut):
        self.dut = dut
        params = json.loads(os.environ["DUT_PARAMS"])
        top = PackedReorderBuffer(**params)
        rb = top.rb
        self.depth = rb.depth
        self.payload_bits = rb.payload_layout.size
        self.bypass = int(os.environ.get("RB_BYPASS", "0"))
        self.sb = ReorderScoreboard(self.depth, max_run=rb.max_run, bypass=bool(self.bypass))
        dl, sl = top.drive_layout, top.sample_layout
        self.d = {name: Field(dl, name) for name in
                  ("alloc_ready", "retire_ready", "flush", "bypass", "complete_valid")}
        self.d["seq"] = Field(dl, "complete", "seq")
        self.d["payload"] = Field(dl, "complete", "payload")
        self.s = {name: Field(sl, name) for name in
                  ("alloc_valid", "retire_valid", "busy", "error", "complete_ready",
                   "alloc_seq", "error_seq")}
        self.s["retire_seq"] = Field(sl, "retire", "seq")
        self.s["retire_payload"] = Field(sl, "retire", "payload")
        self.s["retire_last"] = Field(sl, "retire", "last")

    async def start(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        dut.drive.value = self.bypass << self.d["bypass"].shift
        for _ in range(2):
            await FallingEdge(dut.clk)
        # The cycle that ends at the next rising edge is the first out of reset.
        dut.rst.value = 0

    async def run(self, completions: int, p_alloc: float, p_complete: float, p_retire: float,
                  flush_every: int) -> None:
        dut = self.dut
        h_drive, h_sample = dut.drive, dut.sample
        sb_cycle = self.sb.cycle
        rnd, randrange, getrandbits = random.random, random.randrange, random.getrandbits
        s, d = self.s, self.d
        sh_av, sh_rv, sh_busy, sh_err, sh_cr = (s[k].shift for k in (
            "alloc_valid", "retire_valid", "busy", "error", "complete_ready"))
        f_aseq, f_eseq = s["alloc_seq"], s["error_seq"]
        f_rseq, f_rpay, f_rlast = s["retire_seq"], s["retire_payload"], s["retire_last"]
        b_ar = 1 << d["alloc_ready"].shift
        b_rr = 1 << d["retire_ready"].shift
        b_fl = 1 << d["flush"].shift
        b_cv = 1 << d["complete_valid"].shift
        b_by = self.bypass << d["bypass"].shift
        sh_seq, sh_pay = d["seq"].shift, d["payload"].shift
        pbits = self.payload_bits
        fe = FallingEdge(dut.clk)

        varying = p_alloc < 0 or p_complete < 0 or p_retire < 0
        pa, pc, pr = p_alloc, p_complete, p_retire
        outstanding = []            # allocated, not completed, in allocation order
        sent = flushes = cycle = 0
        draining = False
        # Each iteration is one clock cycle, entered at its falling edge. After the last
        # random completion, a drain phase completes what is left and takes every retire.
        while True:
            if not draining and sent >= completions:
                draining = True
                drain_left = len(outstanding) + self.depth + 16
                pa, pc, pr, flush_every, varying = 0.0, 1.0, 1.0, 0, False
            if draining:
                if drain_left == 0:
                    break
                drain_left -= 1
            if varying and cycle % 4096 == 0:
                # Mostly fast phases (completions per cycle dominate the run time), some
                # with heavy back-pressure.
                pa = p_alloc if p_alloc >= 0 else random.choice([0.25, 0.8, 1.0, 1.0])
                pc = p_complete if p_complete >= 0 else random.choice([0.4, 0.9, 1.0, 1.0])
                pr = p_retire if p_retire >= 0 else random.choice([0.25, 0.8, 1.0, 1.0])
            smp = h_sample.value.to_unsigned()
            av = (smp >> sh_av) & 1
            rv = (smp >> sh_rv) & 1
            busy = (smp >> sh_busy) & 1
            err = (smp >> sh_err) & 1
            if not (smp >> sh_cr) & 1:
                raise AssertionError(f"cycle {cycle}: complete.ready is low")

            ar = 1 if rnd() < pa else 0
            rr = 1 if rnd() < pr else 0
            fl = 1 if flush_every and rnd() * flush_every < 1 else 0
            drv = b_by | (b_ar if ar else 0) | (b_rr if rr else 0) | (b_fl if fl else 0)
            if outstanding and rnd() < pc:
                # Mostly near the oldest (runs form), sometimes anywhere (deep reordering).
                if rnd() < 0.5:
                    idx = randrange(min(len(outstanding), 4))
                else:
                    idx = randrange(len(outstanding))
                cseq = outstanding.pop(idx)
                cpay = getrandbits(pbits)
                drv |= b_cv | (cseq << sh_seq) | (cpay << sh_pay)
                cv = 1
            else:
                cseq = cpay = cv = 0
            h_drive.value = drv

            aseq = f_aseq.get(smp)
            sb_cycle(alloc_valid=av, alloc_seq=aseq, alloc_ready=ar,
                     complete_valid=cv, complete_seq=cseq, complete_payload=cpay,
                     retire_valid=rv, retire_seq=f_rseq.get(smp),
                     retire_payload=f_rpay.get(smp), retire_last=f_rlast.get(smp),
                     retire_ready=rr, flush=fl, busy=busy, error=err,
                     error_seq=f_eseq.get(smp))
            if cv and not busy:
                sent += 1
            if av and ar:
                outstanding.append(aseq)
            if fl:
                outstanding.clear()
                flushes += 1
            cycle += 1
            await fe

        self.sb.finish()
        st = self.sb.stats
        dut._log.info("depth %d bypass %d: %d cycles, %d allocs, %d completions, %d retires, "
                      "%d runs (mean run %.2f), %d flushes discarding %d",
                      self.depth, self.bypass, st.cycles, st.allocs, st.completions,
                      st.retires, st.runs, st.retires / max(st.runs, 1), flushes,
                      st.discarded)
        assert not outstanding, f"{len(outstanding)} seqs never completed"
        assert st.retires + st.discarded == st.allocs, \
            f"{st.allocs} allocated, {st.discarded} flushed, but {st.retires} retired"
        assert st.completions >= completions


@cocotb.test()
async def random_traffic(dut):
    """Random completion order and back-pressure, every entry checked by the scoreboard."""
    tb = TB(dut)
    await tb.start()
    await tb.run(completions=int(os.environ.get("RB_COMPLETIONS", "20000")),
                 p_alloc=float(os.environ.get("RB_P_ALLOC", "-1")),
                 p_complete=float(os.environ.get("RB_P_COMPLETE", "-1")),
                 p_retire=float(os.environ.get("RB_P_RETIRE", "-1")),
                 flush_every=int(os.environ.get("RB_FLUSH_EVERY", "0")))
