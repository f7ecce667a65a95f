"""BarCompleter(decode_bar=False): behind a PCIe core that matched the BAR already, every
memory request is a BAR0 hit at offset ``address % bar_size`` (the external configuration
mode, docs/pcie-function.md), and Memory Space off still refuses it.

Expected values: the offset rule above, the register bus rules of hdl/pcie/register_bus.py
and the completion rules of PCIe Base §2.2.9 / §2.3.1 (CplD with the DW for a 1-DW read,
UR for a non-posted request the function does not serve); never the RTL's outputs."""
import random

from amaranth.sim import Simulator

from hdl.pcie.bar_completer import BarCompleter
from hdl.pcie.register_bus import RegisterWindow
from hdl.pcie.spec import CplStatus, TlpFmtType, tlp_beat_layout
from tests.unit.sim_streams import recv, send, seed

BAR_SIZE = 0x8000
WINDOW = RegisterWindow("regs", 0x1000, 0x1000)


def test_every_memory_request_hits_bar0_at_address_modulo_size():
    rng = random.Random(seed())
    dut = BarCompleter(windows=[WINDOW], bar_size=BAR_SIZE, decode_bar=False)
    assert "bar_base" not in dut.signature.members
    layout = tlp_beat_layout(64)
    completer_id = rng.getrandbits(16)
    regs = {dw: rng.getrandbits(32) for dw in range(WINDOW.size // 4)}
    accesses = []

    async def client(ctx):
        bus = dut.windows.regs
        while True:
            _, _, valid, addr, write, data = await ctx.tick().sample(
                bus.valid, bus.addr, bus.write, bus.w_data)
            ctx.set(bus.ack, 0)
            if not valid:
                continue
            accesses.append((addr, write, data))
            ctx.set(bus.r_data, regs[addr])
            ctx.set(bus.ack, 1)
            if write:
                regs[addr] = data
            await ctx.tick()
            ctx.set(bus.ack, 0)

    def request(addr: int, *, write: bool = False, data: int = 0) -> dict:
        wide = addr >> 32 != 0
        fmt = {(False, False): TlpFmtType.MRD32, (False, True): TlpFmtType.MRD64,
               (True, False): TlpFmtType.MWR32, (True, True): TlpFmtType.MWR64}[write, wide]
        return layout.const({
            "hdr": {"fmt_type": fmt, "length": 1, "requester_id": rng.getrandbits(16),
                    "tag": rng.getrandbits(8), "first_be": 0xF, "addr": addr},
            "data": data, "keep": int(write), "first": 1, "last": 1})

    def anywhere(offset: int) -> int:
        """A BAR0 address with ``offset`` in it, the BAR anywhere in 64-bit space."""
        return rng.getrandbits(64 - 15) << 15 | offset

    async def tb(ctx):
        ctx.set(dut.completer_id, completer_id)
        ctx.set(dut.memory_enable, 1)
        for _ in range(12):
            dw = rng.randrange(WINDOW.size // 4)
            addr = anywhere(WINDOW.offset + 4 * dw)
            if rng.random() < 0.5:
                value = rng.getrandbits(32)
                await send(ctx, dut.rx, [request(addr, write=True, data=value)], rng)
                for _ in range(8):
                    await ctx.tick()
                assert accesses and accesses[-1] == (dw, 1, value), \
                    f"write at {addr:#x}: {accesses[-1:]}"
            else:
                expect = regs[dw]
                await send(ctx, dut.rx, [request(addr)], rng)
                (cpl,) = await recv(ctx, dut.tx, 1, rng)
                assert cpl.hdr.fmt_type == TlpFmtType.CPLD and cpl.hdr.status == CplStatus.SC
                assert cpl.hdr.completer_id == completer_id
                assert cpl.data & 0xFFFF_FFFF == expect, f"read at {addr:#x}"
                assert accesses and accesses[-1][:2] == (dw, 0)
        # Memory Space off: a read gets UR and reaches no register.
        ctx.set(dut.memory_enable, 0)
        count = len(accesses)
        await send(ctx, dut.rx, [request(anywhere(WINDOW.offset))], rng)
        (cpl,) = await recv(ctx, dut.tx, 1, rng)
        assert cpl.hdr.fmt_type == TlpFmtType.CPL and cpl.hdr.status == CplStatus.UR
        # An offset outside every window still misses (UR), wherever the BAR is.
        ctx.set(dut.memory_enable, 1)
        await send(ctx, dut.rx, [request(anywhere(0x6000))], rng)
        (cpl,) = await recv(ctx, dut.tx, 1, rng)
        assert cpl.hdr.status == CplStatus.UR
        assert len(accesses) == count

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(client)
    sim.add_testbench(tb)
    sim.run()
