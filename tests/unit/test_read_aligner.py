"""ReadAligner: buffer-image beats of any alignment become byte-packed client beats."""
import random

from hdl.pcie.dma.read_aligner import ReadAligner
from hdl.pcie.dma_port import DmaError
from tests.unit.sim_streams import run_desc_inp_out, seed


def run_aligner(width: int, commands, rng: random.Random):
    """commands: list of (shift, length, bad, beat_errors or None); returns output beats."""
    B = width // 8
    dut = ReadAligner(width=width)
    descs, beats, expect = [], [], []
    for shift, length, bad, image, errors in commands:
        descs.append({"shift": shift, "len": length, "bad": bad})
        if bad:
            expect.append((b"", True, DmaError.BAD_LENGTH))
            continue
        n = (shift + length + B - 1) // B
        for k in range(n):
            beats.append({"data": int.from_bytes(image[k * B:(k + 1) * B], "little"),
                          "error": errors[k]})
        first_err = next((e for e in errors if e != DmaError.NONE), DmaError.NONE)
        expect.append((image[shift:shift + length], False, first_err))
    out_count = sum(1 if bad else (length + B - 1) // B for _, length, bad, _, _ in commands)
    result = run_desc_inp_out(dut, descs, beats, out_count, rng)
    return expect, result


def check(width, expect, result):
    B = width // 8
    it = iter(result)
    for data, bad, error in expect:
        if bad:
            beat = next(it)
            assert beat.last and beat.keep == 0 and DmaError(beat.error) == DmaError.BAD_LENGTH
            continue
        got = b""
        n = (len(data) + B - 1) // B
        for k in range(n):
            beat = next(it)
            last = k == n - 1
            assert bool(beat.last) == last
            nbytes = len(data) - k * B if last else B
            assert beat.keep == (1 << nbytes) - 1
            got += beat.data.to_bytes(B, "little")[:nbytes]
            assert DmaError(beat.error) == (error if last else DmaError.NONE)
        if error == DmaError.NONE:
            assert got == data


def random_commands(width, rng, count):
    B = width // 8
    cmds = []
    for _ in range(count):
        if rng.random() < 0.05:
            cmds.append((0, 0, True, b"", []))
            continue
        shift = rng.randrange(B) if rng.random() < 0.8 else 0
        length = rng.choice([1, 2, B - 1, B, B + 1, rng.randint(1, 200)])
        n = (shift + length + B - 1) // B
        image = bytes(rng.randrange(256) for _ in range(n * B))
        errors = [DmaError.NONE] * n
        if rng.random() < 0.1:
            errors[rng.randrange(n)] = DmaError.UR
        cmds.append((shift, length, False, image, errors))
    return cmds


def test_read_aligner_64():
    rng = random.Random(seed())
    cmds = random_commands(64, rng, 150)
    check(64, *run_aligner(64, cmds, rng))


def test_read_aligner_128():
    rng = random.Random(seed())
    cmds = random_commands(128, rng, 100)
    check(128, *run_aligner(128, cmds, rng))
