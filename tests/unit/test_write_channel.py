"""WriteChannel: commands become MemWr TLPs that obey MPS, 4 KiB and byte enable rules."""
import random

from amaranth.sim import Simulator

from hdl.pcie.dma.write_channel import WriteChannel
from hdl.pcie.dma_port import DmaError
from hdl.pcie.spec import TlpFmtType
from sim.model.pcie_host import HostMemory, MemRequest, PcieHost
from tests.unit.sim_streams import send, seed


def run_case(width: int, rng: random.Random, mps_code: int, count: int):
    B = width // 8
    dut = WriteChannel(width=width)
    mem, ref = HostMemory(), HostMemory()
    host = PcieHost(mem, max_payload=128 << mps_code)
    cmds, beats = [], []
    for _ in range(count):
        length = rng.choice([1, 2, 3, 5, rng.randint(1, 300), rng.randint(300, 9000)])
        if rng.random() < 0.05:
            length = 0
        addr = rng.randrange(1 << 34) if rng.random() < 0.3 else \
            rng.randrange(1 << 20) * 4096 - rng.randint(0, 8)
        addr = max(addr, 0)
        payload = bytes(rng.randrange(256) for _ in range(length))
        cmds.append({"addr": addr, "len": length})
        n = -(-length // B)
        padded = payload.ljust(n * B, b"\0")
        beats += [{"data": int.from_bytes(padded[k * B:(k + 1) * B], "little"),
                   "last": int(k == n - 1)} for k in range(n)]
        if length:
            ref.write(addr, payload)
    tlps, dones = [], []
    tlp_ends, done_cycles = [], []      # cycle of each TLP's last beat / each done taken
    done_all = []

    async def tb_cmd(ctx):
        ctx.set(dut.mps, mps_code)
        ctx.set(dut.bme, 1)
        ctx.set(dut.requester_id, 0x1234)
        await send(ctx, dut.client.cmd, cmds, rng)

    async def tb_data(ctx):
        await send(ctx, dut.client.data, beats, rng)

    async def tb_tlp(ctx):
        cur = []
        cycle = 0
        while not done_all:
            ready = rng.random() < 0.8
            ctx.set(dut.tlp.ready, ready)
            _, _, valid, beat = await ctx.tick().sample(dut.tlp.valid, dut.tlp.payload)
            cycle += 1
            if valid and ready:
                cur.append(beat)
                if beat.last:
                    tlps.append(cur)
                    tlp_ends.append(cycle)
                    cur = []

    async def tb_done(ctx):
        cycle = 0
        while len(dones) < len(cmds):
            ready = rng.random() < 0.7
            ctx.set(dut.client.done.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.client.done.valid,
                                                           dut.client.done.payload)
            cycle += 1
            if valid and ready:
                dones.append(payload)
                done_cycles.append(cycle)
        ctx.set(dut.client.done.ready, 0)
        for _ in range(20):
            await ctx.tick()
        done_all.append(True)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in (tb_cmd, tb_data, tb_tlp):
        sim.add_testbench(tb, background=True)
    sim.add_testbench(tb_done)
    sim.run()

    lanes = width // 32
    for beats_ in tlps:
        hdr = beats_[0].hdr
        assert all(b.hdr.as_value().value == hdr.as_value().value for b in beats_)
        payload = b""
        for b in beats_:
            for lane in range(lanes):
                if b.keep >> lane & 1:
                    payload += ((b.data >> (32 * lane)) & 0xFFFFFFFF).to_bytes(4, "little")
        fmt = TlpFmtType(hdr.fmt_type)
        assert fmt in (TlpFmtType.MWR32, TlpFmtType.MWR64)
        assert hdr.requester_id == 0x1234
        req = MemRequest(write=True, addr=hdr.addr, length_dw=hdr.length or 1024,
                         first_be=hdr.first_be, last_be=hdr.last_be,
                         four_dw=fmt == TlpFmtType.MWR64, data=payload)
        host.write(req)     # checks MPS, 4 KiB, 3/4 DW and byte enable rules
    # A command's done comes only after its last TLP (and every earlier one) was taken.
    mps = 128 << mps_code
    sent = 0
    for k, cmd in enumerate(cmds):
        if cmd["len"]:
            sent += -(-(cmd["addr"] % mps + cmd["len"]) // mps)
        assert sent <= len(tlp_ends) and (sent == 0 or tlp_ends[sent - 1] < done_cycles[k]), \
            f"done of command {k} before its TLPs left the channel"
    for cmd, done in zip(cmds, dones):
        want = DmaError.BAD_LENGTH if cmd["len"] == 0 else DmaError.NONE
        assert DmaError(done.error) == want
        lo, hi = cmd["addr"] - 8, cmd["addr"] + cmd["len"] + 8
        assert mem.read(lo, hi - lo) == ref.read(lo, hi - lo), f"command {cmd}"


def test_write_channel_64():
    rng = random.Random(seed())
    for mps_code in (0, 5):
        run_case(64, rng, mps_code, 12)


def test_write_channel_128():
    rng = random.Random(seed())
    run_case(128, rng, rng.randrange(3), 15)
