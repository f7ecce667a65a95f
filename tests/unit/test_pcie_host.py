"""The host memory/completer model against the rules of PCIe Base §2.2.5, §2.2.9, §2.3.1.1."""
import os
import random

import pytest

from sim.model.pcie_host import (STATUS_CA, STATUS_SC, STATUS_UR, Completion, Fault,
                                 HostMemory, MemRequest, PcieHost, ProtocolError,
                                 read_byte_count)


def _seed() -> int:
    seed = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    print(f"SEED={seed}")
    return seed


def mem_request(addr: int, length: int, *, write=False, data=b"", tag=0) -> MemRequest:
    """A request for ``length`` bytes at byte address ``addr`` with the §2.2.5 byte enables."""
    first_dw = addr & ~3
    length_dw = ((addr + length - 1) & ~3) - first_dw + 4 >> 2
    first_be = (0xF << (addr & 3)) & 0xF
    last_be = 0xF >> (3 - ((addr + length - 1) & 3))
    if length_dw == 1:
        first_be &= last_be
        last_be = 0
    if write:
        data = bytes(addr & 3) + data + bytes(length_dw * 4 - (addr & 3) - len(data))
    return MemRequest(write=write, addr=first_dw, length_dw=length_dw, first_be=first_be,
                      last_be=last_be, tag=tag, four_dw=first_dw >= 1 << 32, data=data)


def check_completions(host: PcieHost, req: MemRequest, cpls: list[Completion]) -> bytes:
    """Check a completion sequence against §2.3.1.1 and return the bytes it carries."""
    start = req.addr + ((req.first_be & -req.first_be).bit_length() - 1)
    total = read_byte_count(req)
    got = b""
    pos = start
    for i, c in enumerate(cpls):
        assert c.status == STATUS_SC and c.tag == req.tag
        assert c.byte_count == start + total - pos, "Byte Count = bytes still to return"
        assert c.lower_address == pos & 0x7F
        assert c.length_dw * 4 <= host.max_payload
        n = min(c.byte_count, c.length_dw * 4 - (pos & 3))
        end = pos + n
        if i < len(cpls) - 1:
            assert end % host.rcb == 0, "a completion but the last ends on an RCB"
            assert n == c.length_dw * 4 - (pos & 3), "only the last completion ends early"
        got += c.data[pos & 3:(pos & 3) + n]
        pos = end
    assert pos == start + total
    return got


@pytest.mark.parametrize("split", ["max", "rcb", "random"])
@pytest.mark.parametrize("rcb", [64, 128])
def test_read_completions_follow_rcb_and_mps(split, rcb):
    rng = random.Random(_seed())
    mem = HostMemory()
    host = PcieHost(mem, rcb=rcb, max_payload=rng.choice([128, 256, 512]),
                    max_read_request=4096, split=split, rng=rng)
    for _ in range(300):
        length = rng.randint(1, 4096)
        addr = rng.randrange(0, 1 << 40)
        page_end = (addr // 4096 + 1) * 4096
        length = min(length, page_end - addr)
        req = mem_request(addr, length, tag=rng.randrange(256))
        got = check_completions(host, req, host.read(req))
        assert got == mem.read(addr, length)


def test_rcb_split_counts():
    host = PcieHost(HostMemory(), rcb=64, max_payload=256, max_read_request=4096, split="rcb")
    # 512 bytes from 0x1010: first completion up to 0x1040, then 64-byte ones, last to 0x1210.
    cpls = host.read(mem_request(0x1010, 512))
    assert [c.length_dw for c in cpls] == [12] + [16] * 7 + [4]
    host.split = "max"
    cpls = host.read(mem_request(0x1010, 512))
    # at most 256 bytes each, cut at RCBs: 0x1010..0x1100, 0x1100..0x1200, 0x1200..0x1210
    assert [c.length_dw for c in cpls] == [60, 64, 4]
    assert [c.byte_count for c in cpls] == [512, 272, 16]
    assert [c.lower_address for c in cpls] == [0x10, 0x00, 0x00]


def test_byte_count_table():
    """Table 2-37 of §2.2.9: Byte Count from the byte enables."""
    host = PcieHost(HostMemory())
    for first_be, count in [(0b1001, 4), (0b0101, 3), (0b1010, 3), (0b0011, 2),
                            (0b0110, 2), (0b1100, 2), (0b0001, 1), (0b1000, 1), (0b0000, 1)]:
        assert read_byte_count(MemRequest(False, 0x100, 1, first_be, 0)) == count
        assert host.read(MemRequest(False, 0x100, 1, first_be, 0))[0].byte_count == count
    assert read_byte_count(MemRequest(False, 0x100, 3, 0b1100, 0b0011)) == 8


def test_write_byte_enables():
    mem = HostMemory(background=lambda a: 0xEE)
    host = PcieHost(mem, max_payload=128)
    req = mem_request(0x2003, 6, write=True, data=bytes(range(1, 7)))
    assert (req.first_be, req.last_be, req.length_dw) == (0b1000, 0b0001, 3)
    host.write(req)
    assert mem.read(0x2000, 12) == bytes([0xEE, 0xEE, 0xEE, 1, 2, 3, 4, 5, 6, 0xEE, 0xEE, 0xEE])


def test_protocol_errors():
    host = PcieHost(HostMemory(), max_payload=128, max_read_request=512)
    with pytest.raises(ProtocolError, match="4 KiB"):
        host.read(mem_request(0xFF0, 32))
    with pytest.raises(ProtocolError, match="Max_Read_Request_Size"):
        host.read(mem_request(0x1000, 1024))
    with pytest.raises(ProtocolError, match="Max_Payload_Size"):
        host.write(mem_request(0x1000, 256, write=True, data=bytes(256)))
    req = mem_request(0x1000, 16)
    req.four_dw = True
    with pytest.raises(ProtocolError, match="below 4 GiB"):
        host.read(req)
    req = mem_request(0x1002, 16)
    req.first_be = 0b0110
    with pytest.raises(ProtocolError, match="non-contiguous"):
        host.read(req)
    req = mem_request(0x1000, 4)
    req.last_be = 0b1111
    with pytest.raises(ProtocolError, match="0000b"):
        host.read(req)


def test_faults():
    host = PcieHost(HostMemory(), rcb=64, max_payload=128, max_read_request=512, split="rcb")
    req = mem_request(0x3000, 512, tag=7)
    cpls = host.read(req, Fault.UR, fault_at=2)
    assert [c.status for c in cpls] == [STATUS_SC, STATUS_SC, STATUS_UR]
    assert cpls[-1].length_dw == 0 and cpls[-1].byte_count == 512 - 128
    cpls = host.read(req, Fault.CA, fault_at=0)
    assert len(cpls) == 1 and cpls[0].status == STATUS_CA and cpls[0].byte_count == 512
    cpls = host.read(req, Fault.POISONED, fault_at=3)
    assert [c.ep for c in cpls] == [False, False, False, True] + [False] * 4
    assert len(host.read(req, Fault.LOST, fault_at=5)) == 5
