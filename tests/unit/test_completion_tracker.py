"""CompletionTracker: completions split at RCB/MPS and reordered across tags land in place.

The testbench issues MemRd records, answers them with the host model's completions (random
RCB splits, tags interleaved, random gaps), rebuilds each channel's buffer from the ring
writes and checks it against host memory, the slot events, the freed tags and the counters,
including UR, poisoned and lost completions (timeout) and a late completion after a timeout.
"""
import random

from amaranth.sim import Simulator

from hdl.pcie.dma.completion_tracker import CompletionTracker
from hdl.pcie.dma_port import DmaError
from hdl.pcie.spec import TlpFmtType
from sim.model.pcie_host import Fault, HostMemory, MemRequest, PcieHost
from tests.unit.sim_streams import seed

WIDTH, LANES, B = 64, 2, 8
RING = 32768        # large, so that no two reads share buffer beats
TIMEOUT = 600


def mem_request(addr, length, tag):
    first_dw = addr & ~3
    length_dw = (((addr + length - 1) & ~3) - first_dw) // 4 + 1
    first_be = (0xF << (addr & 3)) & 0xF
    last_be = 0xF >> (3 - ((addr + length - 1) & 3))
    if length_dw == 1:
        first_be, last_be = first_be & last_be, 0
    return MemRequest(False, first_dw, length_dw, first_be, last_be, tag=tag)


def test_completion_tracker():
    rng = random.Random(seed())
    dut = CompletionTracker(width=WIDTH, channels=2, tags=8, ring_beats=RING, slots=1024,
                            timeout=TIMEOUT)
    mem = HostMemory()
    host = PcieHost(mem, rcb=rng.choice([64, 128]), max_payload=128, max_read_request=4096,
                    split="random", rng=rng)
    ring = {}
    reads = []          # dicts: tag, chan, slot, addr, len, base, fault, event
    events, freed = [], []
    late = []

    def beats_of(c):
        hdr = {"fmt_type": TlpFmtType.CPLD if c.length_dw else TlpFmtType.CPL,
               "length": c.length_dw % 1024, "tag": c.tag, "status": c.status, "ep": int(c.ep),
               "byte_count": c.byte_count % 4096, "lower_address": c.lower_address}
        if not c.length_dw:
            return [{"hdr": hdr, "data": 0, "keep": 0, "first": 1, "last": 1}]
        n = -(-c.length_dw // LANES)
        out = []
        for k in range(n):
            chunk = c.data[k * B:(k + 1) * B]
            out.append({"hdr": hdr, "data": int.from_bytes(chunk, "little"),
                        "keep": (1 << (len(chunk) // 4)) - 1, "first": int(k == 0),
                        "last": int(k == n - 1)})
        return out

    async def tb(ctx):
        layout = dut.cpl.payload.shape()
        free_tags = list(range(8))
        queues = {}         # tag -> list of completions still to send
        base = [0, 0]
        now = 0

        async def tick():
            nonlocal now
            _, _, ev, fv, ft, wr = await ctx.tick().sample(
                dut.slot_done, dut.free.valid, dut.free.payload, dut.ring_wr)
            now += 1
            if ev.valid:
                events.append((ev.chan, ev.slot, DmaError(ev.error), now))
            if fv:
                freed.append((ft, now))
            for lane in range(LANES):
                w = wr.lane[lane]
                if w.en:
                    ring[(wr.chan, lane, w.addr)] = w.data

        for round_ in range(40):
            # issue a few reads
            while free_tags and rng.random() < 0.7:
                tag = free_tags.pop(rng.randrange(len(free_tags)))
                chan = rng.randrange(2)
                length = rng.choice([1, 3, rng.randint(1, 200), rng.randint(200, 1024)])
                addr = rng.randrange(1 << 30)
                addr -= (addr % 4096 + length > 4096) * length
                addr = max(addr, 0)
                nbeats = ((addr % B) + length + B - 1) // B
                r = dict(tag=tag, chan=chan, slot=len(reads) % 1024, addr=addr, len=length,
                         base=base[chan], fault=rng.choice([Fault.NONE] * 8 + [
                             Fault.UR, Fault.POISONED, Fault.LOST]), t_issue=now)
                base[chan] = (base[chan] + nbeats) % RING
                reads.append(r)
                ctx.set(dut.issue.valid, 1)
                ctx.set(dut.issue.payload, dut.issue.payload.shape().const(dict(
                    tag=tag, chan=chan, slot=r["slot"], ring_base=r["base"],
                    end_rel=addr % B + length)))
                await tick()
                ctx.set(dut.issue.valid, 0)
                cpls = host.read(mem_request(addr, length, tag), r["fault"])
                if r["fault"] is Fault.LOST:
                    full = host.read(mem_request(addr, length, tag))
                    late.append((r, full[len(cpls):]))
                queues[tag] = cpls
            # send completions, tags interleaved at random
            while any(queues.values()):
                tag = rng.choice([t for t, q in queues.items() if q])
                for beat in beats_of(queues[tag].pop(0)):
                    while rng.random() < 0.2:
                        ctx.set(dut.cpl.valid, 0)
                        await tick()
                    ctx.set(dut.cpl.payload, layout.const(beat))
                    ctx.set(dut.cpl.valid, 1)
                    await tick()
                ctx.set(dut.cpl.valid, 0)
            for _ in range(4):
                await tick()
            for t, _ in freed:
                if t not in free_tags and not queues.get(t):
                    free_tags.append(t)
            freed.clear()
            queues = {t: q for t, q in queues.items() if q}
        # a malformed completion (more bytes than the request asked for) is dropped: it
        # writes nothing, and its request times out
        while not free_tags:
            await tick()
            free_tags += [t for t, _ in freed]
            freed.clear()
        tag = free_tags.pop()
        bad = dict(tag=tag, chan=0, slot=len(reads) % 1024, addr=0x5000, len=64,
                   base=base[0], fault=Fault.LOST, t_issue=now, malformed=True)
        reads.append(bad)
        nonlocal_bad_base[0] = bad["base"]
        ctx.set(dut.issue.valid, 1)
        ctx.set(dut.issue.payload, dut.issue.payload.shape().const(dict(
            tag=tag, chan=0, slot=bad["slot"], ring_base=bad["base"], end_rel=64)))
        await tick()
        ctx.set(dut.issue.valid, 0)
        good = host.read(mem_request(0x5000, 128, tag))[0]
        for beat in beats_of(good):         # Byte Count 128 for a 64-byte request
            ctx.set(dut.cpl.payload, layout.const(beat))
            ctx.set(dut.cpl.valid, 1)
            await tick()
        ctx.set(dut.cpl.valid, 0)
        # wait for the timeouts, deliver the late completions, wait for the quarantine
        for _ in range(TIMEOUT + 40):
            await tick()
        for r, cpls in late:
            for c in cpls:
                for beat in beats_of(c):
                    ctx.set(dut.cpl.payload, layout.const(beat))
                    ctx.set(dut.cpl.valid, 1)
                    await tick()
            ctx.set(dut.cpl.valid, 0)
        for _ in range(TIMEOUT + 40):
            await tick()
        status = ctx.get(dut.status)
        results.update(discarded=status.cpl_discarded, timeouts=status.cpl_timeouts,
                       errors=status.cpl_errors)

    results = {}
    nonlocal_bad_base = [None]
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()

    assert len(events) == len(reads), f"{len(events)} events for {len(reads)} reads"
    by_slot = {}
    for chan, slot, err, t in events:
        by_slot.setdefault((chan, slot), []).append((err, t))
    expect_err = {Fault.NONE: DmaError.NONE, Fault.UR: DmaError.UR,
                  Fault.POISONED: DmaError.POISONED, Fault.LOST: DmaError.TIMEOUT}
    for r in reads:
        err, t = by_slot[(r["chan"], r["slot"])].pop(0)
        assert err == expect_err[r["fault"]], f"read {r}: {err}"
        if r["fault"] is Fault.LOST:
            # one tag scanned every 2 clocks (a few more if completions end other requests
            # just then)
            assert TIMEOUT <= t - r["t_issue"] <= TIMEOUT + 2 * 8 + 8
        if r["fault"] is not Fault.NONE:
            continue
        first = r["addr"] & ~(B - 1)
        image = b""
        nbeats = ((r["addr"] % B) + r["len"] + B - 1) // B
        for k in range(nbeats):
            for lane in range(LANES):
                v = ring.get((r["chan"], lane, (r["base"] + k) % RING))
                image += (v if v is not None else 0).to_bytes(4, "little")
        off = r["addr"] - first
        assert image[off:off + r["len"]] == mem.read(r["addr"], r["len"]), f"read {r}"
    lost = sum(r["fault"] is Fault.LOST for r in reads)
    assert results["timeouts"] == lost
    assert results["errors"] == sum(r["fault"] in (Fault.UR, Fault.POISONED) for r in reads)
    assert results["discarded"] == sum(len(c) for _, c in late) + 1     # + the malformed one
    bad_base = nonlocal_bad_base[0]
    assert all(ring.get((0, lane, (bad_base + k) % RING)) is None
               for lane in range(LANES) for k in range(20)), "malformed completion written"
