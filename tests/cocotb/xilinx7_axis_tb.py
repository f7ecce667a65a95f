"""cocotb side of test_xilinx7_axis.py: drive, loop back and check the adapters."""
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hdl.pcie.spec import raw_tlp_beat_layout
from hdl.pcie.xilinx7.interface import axis_rx_layout, axis_tx_layout
from sim.layout import pack, unpack
from sim.xilinx7 import AxisTxCollector, axis_rx_beats, random_tlp, raw_dws

PARAMS = json.loads(os.environ["DUT_PARAMS"])
WIDTH = PARAMS["width"]
LANES = WIDTH // 32


def expected_raw_beats(tlp: bytes) -> list[dict]:
    """The raw-stream beats of one TLP: DW 0 in lane 0, dense, per-DW keep (hdl/pcie/spec.py)."""
    dws = raw_dws(tlp)
    beats = []
    for i in range(0, len(dws), LANES):
        chunk = dws[i:i + LANES]
        beats.append({"data": sum(dw << (32 * k) for k, dw in enumerate(chunk)),
                      "keep": (1 << len(chunk)) - 1,
                      "first": int(i == 0), "last": int(i + LANES >= len(dws))})
    return beats


class Bench:
    """Drives m_axis_rx from the block model, loops rx into tx, collects s_axis_tx."""

    def __init__(self, dut, rng: random.Random):
        self.dut = dut
        self.rng = rng
        self.rx_layout = axis_rx_layout(WIDTH)
        self.tx_layout = axis_tx_layout(WIDTH)
        self.raw_layout = raw_tlp_beat_layout(WIDTH)

    async def reset(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 8, unit="ns").start())
        for sig in (dut.axis_rx__valid, dut.rx__ready, dut.tx__valid, dut.axis_tx__ready):
            sig.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await RisingEdge(dut.clk)
        dut.rst.value = 0

    async def run(self, tlps: list[bytes], *, rx_ready: float, tx_valid: float,
                  axis_tx_ready: float, idle: float = 0.2, straddle: float = 0.5) -> int:
        """Send ``tlps`` through; return the clock cycles it took and the m_axis_rx beats."""
        dut, rng = self.dut, self.rng
        beats = axis_rx_beats(tlps, width=WIDTH, rng=rng, idle=idle, straddle=straddle)
        expected = [beat for tlp in tlps for beat in expected_raw_beats(tlp)]
        loop: list[dict] = []       # raw beats taken from rx, waiting to go into tx
        collector = AxisTxCollector(WIDTH)
        in_index = out_index = 0
        cycles = 0
        limit = 20 * len(beats) + 1000
        while len(collector.tlps) < len(tlps):
            await RisingEdge(dut.clk)
            cycles += 1
            assert cycles < limit, (f"stalled: {len(collector.tlps)} of {len(tlps)} TLPs "
                                    f"back after {cycles} cycles")
            # Drive this cycle's inputs.
            beat = beats[in_index] if in_index < len(beats) else None
            dut.axis_rx__valid.value = beat is not None
            if beat is not None:
                dut.axis_rx__payload.value = pack(self.rx_layout, beat)
            dut.rx__ready.value = rng.random() < rx_ready
            offer_tx = bool(loop) and rng.random() < tx_valid
            dut.tx__valid.value = offer_tx
            if offer_tx:
                dut.tx__payload.value = pack(self.raw_layout, loop[0])
            dut.axis_tx__ready.value = rng.random() < axis_tx_ready
            # See which transfers the clock edge will take.
            await ReadOnly()
            if in_index < len(beats) and (beat is None or dut.axis_rx__ready.value):
                in_index += 1
            if dut.rx__valid.value and dut.rx__ready.value:
                got = unpack(self.raw_layout, dut.rx__payload.value.to_unsigned())
                assert out_index < len(expected), f"rx beat beyond the {len(expected)} expected"
                want = expected[out_index]
                mask = sum(0xFFFF_FFFF << (32 * k) for k in range(LANES) if want["keep"] >> k & 1)
                assert (got["keep"], got["first"], got["last"]) == \
                    (want["keep"], want["first"], want["last"]), \
                    f"rx beat {out_index}: got {got}, want {want}"
                assert got["data"] & mask == want["data"], \
                    f"rx beat {out_index}: data {got['data']:#x}, want {want['data']:#x}"
                out_index += 1
                loop.append(got)
            if offer_tx and dut.tx__ready.value:
                loop.pop(0)
            if dut.axis_tx__valid.value and dut.axis_tx__ready.value:
                tlp = collector.push(unpack(self.tx_layout, dut.axis_tx__payload.value.to_unsigned()))
                if tlp is not None:
                    n = len(collector.tlps) - 1
                    assert tlp == tlps[n], f"TLP {n} came back as {tlp.hex()}, sent {tlps[n].hex()}"
        assert out_index == len(expected)
        dut._log.info("%d TLPs, %d m_axis_rx beats, %d raw beats, %d s_axis_tx beats, %d cycles",
                      len(tlps), len(beats), len(expected), collector.beats, cycles)
        return cycles, len(beats)


def make_tlps(rng: random.Random, count: int) -> list[bytes]:
    # Mostly short TLPs, where straddling and partial beats are densest, plus a few long ones.
    return [random_tlp(rng, max_payload_dws=rng.choice((1, 2, 3, 4, 5, 8, 64)))
            for _ in range(count)]


@cocotb.test()
async def round_trip_random_backpressure(dut):
    """Random TLPs through both adapters with random back-pressure everywhere."""
    rng = random.Random(random.getrandbits(64))
    bench = Bench(dut, rng)
    await bench.reset()
    await bench.run(make_tlps(rng, 250), rx_ready=0.7, tx_valid=0.7, axis_tx_ready=0.6)


@cocotb.test()
async def round_trip_full_rate(dut):
    """Back-to-back beats, every TLP that can straddle does, no back-pressure: the adapters
    take one m_axis_rx beat per clock, except one bubble for each TLP that starts in DW 2 and
    ends in the upper half of a beat (documented in AxisRxAdapter)."""
    rng = random.Random(random.getrandbits(64))
    bench = Bench(dut, rng)
    await bench.reset()
    tlps = make_tlps(rng, 150)
    cycles, beats = await bench.run(tlps, rx_ready=1.0, tx_valid=1.0, axis_tx_ready=1.0,
                                    idle=0, straddle=1.0)
    # At most one bubble per TLP, plus the loop's pipeline fill at the end.
    assert cycles <= beats + (len(tlps) if WIDTH == 128 else 0) + 4, \
        f"{cycles} cycles for {beats} input beats"


@cocotb.test()
async def single_dw_and_header_only_tlps(dut):
    """The shortest TLPs (3- and 4-DW headers alone, 1-DW payloads) back to back: every
    straddle and every partial last beat the 128-bit interface can produce."""
    rng = random.Random(random.getrandbits(64))
    bench = Bench(dut, rng)
    await bench.reset()
    tlps = [random_tlp(rng, max_payload_dws=1) for _ in range(200)]
    await bench.run(tlps, rx_ready=0.8, tx_valid=0.9, axis_tx_ready=0.8)
