"""WriteAligner: byte-packed client beats become DW-aligned TLP payloads."""
import random

from hdl.pcie.dma.write_aligner import WriteAligner
from tests.unit.sim_streams import run_desc_inp_out, seed


def split_command(addr: int, length: int, mps: int):
    """TLP pieces of a write: cut at multiples of mps (PCIe Base §2.2.7)."""
    pieces = []
    while length:
        n = min(length, mps - addr % mps)
        pieces.append((addr, n))
        addr += n
        length -= n
    return pieces


def run_case(width: int, rng: random.Random, count: int):
    B = width // 8
    dut = WriteAligner(width=width)
    descs, beats, expect = [], [], []
    for _ in range(count):
        if rng.random() < 0.05:
            length = 0      # a refused empty command: one descriptor of length 0
            descs.append({"pad": 0, "len": 0, "cmd_first": 1, "cmd_last": 1, "cmd_beats": 0})
            continue
        addr = rng.randrange(1 << 20)
        length = rng.choice([1, 3, 4, 5, B, B + 3, rng.randint(1, 700)])
        payload = bytes(rng.randrange(256) for _ in range(length))
        nbeats = (length + B - 1) // B
        padded = payload + bytes(rng.randrange(256) for _ in range(nbeats * B - length))
        beats += [int.from_bytes(padded[k * B:(k + 1) * B], "little") for k in range(nbeats)]
        pieces = split_command(addr, length, rng.choice([128, 256]))
        off = 0
        for i, (a, n) in enumerate(pieces):
            descs.append({"pad": a % 4, "len": n, "cmd_first": int(i == 0),
                          "cmd_last": int(i == len(pieces) - 1), "cmd_beats": nbeats})
            expect.append((a % 4, payload[off:off + n]))
            off += n
    out_count = sum((pad + len(p) + B - 1) // B for pad, p in expect)
    result = run_desc_inp_out(dut, descs, beats, out_count, rng)

    it = iter(result)
    for pad, payload in expect:
        total = pad + len(payload)
        n = (total + B - 1) // B
        image = b""
        for k in range(n):
            beat = next(it)
            assert bool(beat.first) == (k == 0) and bool(beat.last) == (k == n - 1)
            dws = (min(total - k * B, B) + 3) // 4
            assert beat.keep == (1 << dws) - 1
            image += beat.data.to_bytes(B, "little")
        assert image[pad:pad + len(payload)] == payload


def test_write_aligner_64():
    run_case(64, random.Random(seed()), 120)


def test_write_aligner_128():
    run_case(128, random.Random(seed()), 80)
