"""The RTL backend's root-complex side without a simulator: how it completes the device's
reads (PCIe Base 4.0 §2.3.1.1, §2.2.9), applies its writes' byte enables (§2.2.5), turns
guest accesses into byte enables, and how the host judges an RTL run."""
import os
import types

import pytest

from hdl.pcie.spec import raw_tlp_beat_layout
from sim.layout import unpack
from sim.linux.blk_scenario import Pattern, host_checks, make_patterns
from sim.linux.proxy import GuestMemory, Interrupt, MemoryRegion
from sim.linux.qemu import ConsoleLine, parse_console
from sim.linux.rtl_backend import RtlBackend, completion_chunks
from sim.model import tlp as model

RAM_BASE = 0x10_0000
RAM_SIZE = 0x4000


def test_completion_chunks_follow_the_byte_count_rules():
    # 128 DW from a 256-byte aligned address: two CplDs, Byte Count = bytes left.
    assert completion_chunks(0x1000, 128, 0xF, 0xF) == [(0x1000, 512, 256), (0x1100, 256, 256)]
    # First DW BE 1110b and Last DW BE 0011b trim 1 byte at the start and 2 at the end.
    assert completion_chunks(0x2000, 4, 0b1110, 0b0011) == [(0x2001, 13, 13)]
    # One DW, bytes 1 and 2 only.
    assert completion_chunks(0x3000, 1, 0b0110, 0) == [(0x3001, 2, 2)]
    # A zero-length read is completed with one DW and Byte Count 1.
    assert completion_chunks(0x3000, 1, 0, 0) == [(0x3000, 1, 0)]
    # Crossing a 256-byte boundary splits there (a multiple of the 64-byte RCB).
    assert completion_chunks(0x10F0, 8, 0xF, 0xF) == [(0x10F0, 32, 16), (0x1100, 16, 16)]


@pytest.mark.parametrize("offset, size, expected", [
    (0, 4, (1, 0xF, 0)), (2, 1, (1, 0b0100, 0)), (2, 2, (1, 0b1100, 0)),
    (3, 2, (2, 0b1000, 0b0001)), (0, 8, (2, 0xF, 0xF)), (4, 8, (2, 0xF, 0xF)),
    (1, 4, (2, 0b1110, 0b0001)),
])
def test_byte_enables_of_guest_accesses(offset, size, expected):
    assert RtlBackend._byte_enables(offset, size) == expected


@pytest.fixture
def backend():
    fd = os.memfd_create("ram")
    os.ftruncate(fd, RAM_SIZE)
    memory = GuestMemory()
    memory.remap([MemoryRegion(RAM_BASE, RAM_SIZE, 0)], [fd])
    memory.write(RAM_BASE, bytes(i & 0xFF for i in range(RAM_SIZE)))
    signals = {name: types.SimpleNamespace(value=0) for name in ("tx__ready", "rx__valid")}
    dut = types.SimpleNamespace(**signals)
    rtl = RtlBackend(dut, memory, Interrupt(), lambda bar: 0xFEBF8000)
    yield rtl
    memory.close()


def sent_tlps(rtl):
    """Decode what the backend queued for the RTL's rx stream."""
    layout = raw_tlp_beat_layout(64)
    tlps, beats = [], []
    for packed in rtl._rx:
        beats.append(unpack(layout, packed))
        if beats[-1]["last"]:
            tlps.append(model.decode(model.join_raw_beats(beats)))
            beats = []
    return tlps


def mem_request(fmt_type, addr, length, first_be=0xF, last_be=0xF, payload=()):
    return dict(model.empty_header(), fmt_type=fmt_type, addr=addr, length=length,
                first_be=first_be, last_be=last_be if length > 1 else 0,
                requester_id=0x0100, tag=7), list(payload)


def test_device_reads_are_completed_from_guest_ram(backend):
    addr = RAM_BASE + 0xF8           # 96 DW, crossing the boundaries at +0x100 and +0x200
    backend._from_device(*mem_request(0x00, addr, 96, 0b1100, 0b0111))
    cpls = sent_tlps(backend)
    first, total = addr + 2, 96 * 4 - 2 - 1
    assert [h["byte_count"] for h, _ in cpls] == [total, total - 6, total - 6 - 256]
    data = b""
    for (hdr, payload), start in zip(cpls, (first, RAM_BASE + 0x100, RAM_BASE + 0x200),
                                     strict=True):
        assert hdr["fmt_type"] == 0x4A and hdr["status"] == 0
        assert (hdr["requester_id"], hdr["tag"]) == (0x0100, 7)
        assert hdr["lower_address"] == start & 0x7F
        raw = model.dws_to_bytes(payload)
        data += raw[start & 3:][:min(hdr["byte_count"], len(raw) - (start & 3))]
    assert data == backend.memory.read(first, total)
    assert backend.dma.read_bytes == total


def test_device_reads_outside_ram_get_unsupported_request(backend):
    backend._from_device(*mem_request(0x00, RAM_BASE + RAM_SIZE - 8, 4))
    [(hdr, payload)] = sent_tlps(backend)
    assert hdr["fmt_type"] == 0x0A and hdr["status"] == 1 and payload == []
    assert backend.dma.unsupported_reads == 1


def test_device_writes_honour_byte_enables(backend):
    before = backend.memory.read(RAM_BASE + 0x200, 16)
    backend._from_device(*mem_request(0x40, RAM_BASE + 0x200, 3, 0b1000, 0b0011,
                                      [0xAAAAAAAA, 0xBBBBBBBB, 0xCCCCCCCC]))
    after = backend.memory.read(RAM_BASE + 0x200, 16)
    assert after == before[:3] + b"\xaa" + b"\xbb" * 4 + b"\xcc" * 2 + before[10:]
    assert backend.dma.write_bytes == 7
    # A write that runs past RAM is dropped whole.
    backend._from_device(*mem_request(0x40, RAM_BASE + RAM_SIZE - 4, 2, payload=[1, 2]))
    assert backend.dma.dropped_writes == 1
    assert backend.memory.read(RAM_BASE + RAM_SIZE - 4, 4) == before[:0] + bytes(
        (RAM_SIZE - 4 + i) & 0xFF for i in range(4))


def test_intx_messages_drive_the_line(backend):
    msg = dict(model.empty_header(), fmt_type=0x34, msg_code=0x20)
    backend._from_device(msg, [])
    assert backend.interrupt.level and backend.interrupt.assertions == 1
    backend._from_device(dict(msg, msg_code=0x24), [])
    assert not backend.interrupt.level


def lines(*texts):
    return [ConsoleLine(float(i), t) for i, t in enumerate(texts)]


def made_up_result():
    bar = 0xFEBF8000
    cfg = [[0, "write", 0x10, 0xFFFFFFFF, 4, 0], [0, "reset", 0, 0, 0, 0],
           [10, "read", 0x00, 0, 2, 0x1AF4], [11, "write", 0x10, 0xFFFFFFFF, 4, 0],
           [12, "write", 0x10, bar, 4, 0], [13, "write", 0x04, 0x0003, 2, 0]]
    return {"exit_code": 0, "error": None, "config_accesses": cfg, "firmware_done": 100,
            "bar_size": [0x8000, 0, 0, 0, 0, 0],
            "dma": {"read_requests": 5, "write_requests": 5},
            "dma_status": {"cpl_errors": 0}, "engine_error": {"kind": 0},
            "intx": {"assertions": 3}}


def made_up_console(patterns, features="01" + "0" * 30 + "1", digest=None):
    infos = [f"INFO pattern: {p.sector} {p.count} {digest or p.md5}" for p in patterns]
    infos += [f"INFO final-pattern: {p.sector} {p.count} {p.md5}" for p in patterns]
    return parse_console(lines("==== virtio-inorder workload begin ====",
                               "INFO bar0: 0x00000000febf8000 0x00000000febfffff",
                               f"INFO features: {features}", *infos,
                               "==== virtio-inorder workload end rc=0 ===="))


def test_host_judges_a_good_run():
    patterns = make_patterns(1, 2048)
    checks = host_checks(made_up_result(), made_up_console(patterns), patterns)
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]


def test_host_catches_wrong_data_and_missing_version_1():
    patterns = make_patterns(1, 2048)
    bad = {c.name for c in host_checks(made_up_result(),
                                       made_up_console(patterns, digest="0" * 32), patterns)
           if not c.passed}
    assert bad == {"raw-patterns"}
    bad = {c.name for c in host_checks(made_up_result(),
                                       made_up_console(patterns, features="0" * 40), patterns)
           if not c.passed}
    assert bad == {"features"}
    result = made_up_result()
    result["config_accesses"][4][3] = 0xFEB00000      # SeaBIOS put BAR0 elsewhere
    bad = {c.name for c in host_checks(result, made_up_console(patterns), patterns)
           if not c.passed}
    assert bad == {"seabios-probe"}


def test_patterns_cover_the_disk_ends_and_replay_from_the_seed():
    a, b = make_patterns(5, 2048), make_patterns(5, 2048)
    assert a == b and a != make_patterns(6, 2048)
    assert a[0].sector == 0 and a[-1].sector + a[-1].count == 2048
    assert all(isinstance(p, Pattern) and len(p.data) % 512 == 0 for p in a)
