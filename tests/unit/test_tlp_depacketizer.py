"""TlpDepacketizer (and the packetizer round trip) against the Python TLP model, both widths.

Scenario: random well-formed TLPs of every kind (some followed by a stray DW that the Length
field excludes, like a TLP digest) go in as raw beats with random gaps and come out decoded
under random back-pressure; each output TLP must equal the model's decode of what went in.
"""
import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hdl.pcie.spec import tlp_signature
from hdl.pcie.tlp_depacketizer import TlpDepacketizer
from hdl.pcie.tlp_packetizer import TlpPacketizer
from sim.amaranth_streams import recv_beats, send_beats, seed_for
from sim.model import tlp as model

N_TLPS = 150


def _split_decoded(beats):
    tlps, cur = [], []
    for beat in beats:
        cur.append(beat)
        if beat["last"]:
            tlps.append(cur)
            cur = []
    return tlps


def _run(dut, inputs, expected, width, seed, *, source, sink):
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    got = []

    async def producer(ctx):
        for beats in inputs:
            await send_beats(ctx, source, beats, rng_in, idle=0.3)

    async def consumer(ctx):
        beats = await recv_beats(ctx, sink, until_last=len(expected), rng=rng_out, idle=0.3)
        got.extend(_split_decoded(beats))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert len(got) == len(expected)
    for i, (beats, (hdr, payload)) in enumerate(zip(got, expected)):
        ghdr, gpayload = model.join_decoded_beats(beats, width)
        assert ghdr == hdr, f"TLP {i}: header {ghdr} != {hdr}"
        assert gpayload == payload, f"TLP {i}: payload differs"
        assert model.masked_beats(beats, width) == model.decoded_beats(hdr, payload, width), \
            f"TLP {i}: beat framing"


@pytest.mark.parametrize("width", [64, 128])
def test_depacketizer_random(width):
    seed = seed_for(f"test_depacketizer_random[{width}]")
    rng = random.Random(seed)
    tlps = [model.random_tlp(rng) for _ in range(N_TLPS)]
    inputs = []
    for hdr, payload in tlps:
        dws = model.encode(hdr, payload)
        if rng.random() < 0.1:
            dws.append(rng.randrange(1 << 32))     # beyond Length: must be dropped
        beats = model.raw_beats(dws, width)
        if rng.random() < 0.1:
            # A stray beat without `first` between TLPs must be discarded.
            beats = [{"data": rng.randrange(1 << width), "keep": 1, "first": 0, "last": 1}] + beats
        inputs.append(beats)
    dut = TlpDepacketizer(width=width)
    _run(dut, inputs, tlps, width, seed, source=dut.raw, sink=dut.tlp)


class _RoundTrip(wiring.Component):
    def __init__(self, width):
        self.pkt = TlpPacketizer(width=width)
        self.dpkt = TlpDepacketizer(width=width)
        super().__init__({"tlp_in": wiring.In(tlp_signature(width)),
                          "tlp_out": wiring.Out(tlp_signature(width))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.pkt = self.pkt
        m.submodules.dpkt = self.dpkt
        wiring.connect(m, wiring.flipped(self.tlp_in), self.pkt.tlp)
        wiring.connect(m, self.pkt.raw, self.dpkt.raw)
        wiring.connect(m, self.dpkt.tlp, wiring.flipped(self.tlp_out))
        return m


@pytest.mark.parametrize("width", [64, 128])
def test_round_trip(width):
    seed = seed_for(f"test_round_trip[{width}]")
    rng = random.Random(seed)
    tlps = [model.random_tlp(rng) for _ in range(N_TLPS)]
    dut = _RoundTrip(width)
    inputs = [model.decoded_beats(h, p, width) for h, p in tlps]
    _run(dut, inputs, tlps, width, seed, source=dut.tlp_in, sink=dut.tlp_out)
