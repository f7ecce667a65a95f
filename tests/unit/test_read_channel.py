"""ReadChannel: splitting at MRRS/4 KiB, buffer reservation, in-order delivery, realignment.

The testbench plays requester and completion tracker: it takes the channel's pieces, keeps
several outstanding, fills their buffer beats and ends them in random order (some with an
error), and checks the client's data against host memory.
"""
import random

from amaranth.sim import Simulator

from hdl.pcie.dma.read_channel import ReadChannel
from hdl.pcie.dma_port import DmaError
from sim.model.pcie_host import HostMemory
from tests.unit.sim_streams import recv, send, seed


def run_case(width: int, rng: random.Random, mrrs_code: int, max_read: int, count: int):
    B = width // 8
    lanes = width // 32
    ring_beats = 4096 // B
    dut = ReadChannel(width=width, index=1, channels=2, ring_beats=ring_beats, slots=8,
                      max_read=max_read)
    mem = HostMemory()
    cmds = []
    for _ in range(count):
        length = rng.choice([1, 2, 7, rng.randint(1, 300), rng.randint(3000, 10000)])
        addr = rng.randrange(1 << 36)
        if rng.random() < 0.05:
            length = 0
        cmds.append({"addr": addr, "len": length})
    size = min(128 << mrrs_code, max_read)
    pieces = []             # (addr, len, slot, error) in issue order
    outstanding = []
    result = []

    async def tb_cmd(ctx):
        ctx.set(dut.mrrs, mrrs_code)
        await send(ctx, dut.client.cmd, cmds, rng)

    async def tb_completer(ctx):
        while True:
            # end one outstanding piece at random (reordering): fill its beats first
            ev = {"valid": 0, "chan": 1, "slot": 0, "error": 0}
            take = False
            ctx.set(dut.sub.ready, 0)
            if not outstanding or rng.random() < 0.7:
                take = len(outstanding) < 8 and rng.random() < 0.6
                ctx.set(dut.sub.ready, take)
            else:
                # often the newest: it shares no beats with older ones only if the channel
                # reserved them
                p = outstanding.pop(-1 if rng.random() < 0.5 else
                                    rng.randrange(len(outstanding)))
                addr, length, slot, base = p
                err = DmaError.CA if rng.random() < 0.05 else DmaError.NONE
                if err == DmaError.NONE:
                    first = addr & ~3
                    data = mem.read(first, ((addr + length + 3) & ~3) - first)
                    for i in range(len(data) // 4):
                        dw = (first - (addr & ~(B - 1))) // 4 + i
                        beat, lane = base + dw // lanes, dw % lanes
                        wr = {"chan": 1, "lane": [{"en": 0, "addr": 0, "data": 0}] * lanes}
                        wr["lane"] = [dict(x) for x in wr["lane"]]
                        wr["lane"][lane] = {"en": 1, "addr": beat % ring_beats,
                                            "data": int.from_bytes(data[4 * i:4 * i + 4],
                                                                   "little")}
                        ctx.set(dut.ring_wr, dut.ring_wr.shape().const(wr))
                        await ctx.tick()
                    ctx.set(dut.ring_wr, dut.ring_wr.shape().const(
                        {"chan": 1, "lane": [{"en": 0, "addr": 0, "data": 0}] * lanes}))
                ev = {"valid": 1, "chan": 1, "slot": slot, "error": err.value}
                pieces_err[slot_key[(addr, slot)]] = err
            ctx.set(dut.slot_done, dut.slot_done.shape().const(ev))
            _, _, valid, sub = await ctx.tick().sample(dut.sub.valid, dut.sub.payload)
            ctx.set(dut.slot_done, dut.slot_done.shape().const(
                {"valid": 0, "chan": 0, "slot": 0, "error": 0}))
            if valid and take:
                assert 1 <= sub.len <= size
                assert sub.addr // 4096 == (sub.addr + sub.len - 1) // 4096
                outstanding.append((sub.addr, sub.len, sub.slot, sub.ring_base))
                slot_key[(sub.addr, sub.slot)] = len(pieces)
                pieces.append((sub.addr, sub.len))
                pieces_err.append(DmaError.NONE)

    slot_key, pieces_err = {}, []
    nbeats = sum(max(1, -(-c["len"] // B)) for c in cmds)

    async def tb_data(ctx):
        result.extend(await recv(ctx, dut.client.data, nbeats, rng, p_ready=0.4))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb_cmd, background=True)
    sim.add_testbench(tb_completer, background=True)
    sim.add_testbench(tb_data)
    sim.run()

    it = iter(result)
    piece_it = iter(zip(pieces, pieces_err))
    for cmd in cmds:
        if cmd["len"] == 0:
            beat = next(it)
            assert beat.last and beat.keep == 0 and DmaError(beat.error) == DmaError.BAD_LENGTH
            continue
        data, error = b"", DmaError.NONE
        n = -(-cmd["len"] // B)
        for k in range(n):
            beat = next(it)
            assert bool(beat.last) == (k == n - 1)
            data += beat.data.to_bytes(B, "little")[:bin(beat.keep).count("1")]
            if beat.last:
                error = DmaError(beat.error)
        covered, errs, off = 0, set(), 0
        expect = bytearray(mem.read(cmd["addr"], cmd["len"]))
        while covered < cmd["len"]:
            (a, length), err = next(piece_it)
            assert a == cmd["addr"] + covered, "pieces cover the command in order"
            if err != DmaError.NONE:
                errs.add(err)
                expect[covered:covered + length] = bytes(length)
            covered += length
        assert covered == cmd["len"]
        assert error == (errs.pop() if errs else DmaError.NONE)
        assert data == bytes(expect)


def test_read_channel_64():
    rng = random.Random(seed())
    run_case(64, rng, mrrs_code=rng.randrange(3, 6), max_read=1024, count=10)


def test_read_channel_128_small_pieces():
    rng = random.Random(seed())
    run_case(128, rng, mrrs_code=0, max_read=1024, count=12)
