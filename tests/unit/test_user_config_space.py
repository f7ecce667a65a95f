"""UserConfigSpace: the vendor capabilities in a PCIe core's user-defined configuration range.

Expected values come from the capability rules (PCI Local Bus 3.0 §6.7: ID, Next Pointer,
body; the chain ends with 0), PG054's rule that unimplemented user-defined registers read
0, and the completion rules of PCIe Base §2.2.9 (CplD with one DW for a read, Cpl for a
write, Byte Count 4, requester ID and tag copied, UR for a function that does not exist);
never from the RTL."""
import random

import pytest
from amaranth.sim import Simulator

from boards.device import DeviceParams, device_params
from hdl.pcie.params import VendorCapability
from hdl.pcie.pcie_function import PcieFunction
from hdl.pcie.spec import CplStatus, TlpFmtType, tlp_beat_layout
from hdl.pcie.user_config_space import UserConfigSpace
from tests.unit.sim_streams import recv, send, seed

# Two capabilities: a 16-byte one, then a 20-byte one whose DWs 2 and 3 (bytes 8..15) are
# forwarded to cfg_ext.
BODY_A = bytes([16]) + bytes(range(0x31, 0x3E))                  # 14 bytes
BODY_B = bytes([20]) + bytes(range(0x51, 0x62))                  # 18 bytes
CAPS = [VendorCapability(BODY_A), VendorCapability(BODY_B, forward=range(8, 16))]


def expected_image(base: int) -> dict[int, int]:
    """DW index -> value a host reads, from PCI Local Bus 3.0 §6.7 (forwarded DWs left out)."""
    a = bytes([0x09, base + 16]) + BODY_A
    b = bytes([0x09, 0x00]) + BODY_B + bytes(20 - 2 - len(BODY_B))
    raw = a + b
    dws = {(base + k) // 4: int.from_bytes(raw[k:k + 4], "little") for k in range(0, 36, 4)}
    for k in (8, 12):
        del dws[(base + 16 + k) // 4]
    return dws


def run(base: int, width: int):
    rng = random.Random(seed())
    dut = UserConfigSpace(vendor_caps=CAPS, base=base, width=width)
    layout = tlp_beat_layout(width)
    forwarded = {(base + 16 + 8) // 4, (base + 16 + 12) // 4}
    ext_regs = {dw: rng.getrandbits(32) for dw in forwarded}    # the cfg_ext client's state
    ext_log = []
    completer_id = rng.getrandbits(16)
    expected = expected_image(base)

    async def ext_client(ctx):
        bus = dut.cfg_ext
        while True:
            _, _, valid, addr, write, be, data = await ctx.tick().sample(
                bus.valid, bus.addr, bus.write, bus.be, bus.w_data)
            ctx.set(bus.ack, 0)
            if not valid:
                continue
            for _ in range(rng.randrange(3)):
                await ctx.tick()
            ext_log.append((addr, write, be, data))
            ctx.set(bus.r_data, ext_regs.get(addr, 0xDEAD_BEEF))
            ctx.set(bus.ack, 1)
            if write:
                mask = sum(0xFF << 8 * i for i in range(4) if be >> i & 1)
                ext_regs[addr] = (ext_regs[addr] & ~mask) | (data & mask)
            await ctx.tick()
            ctx.set(bus.ack, 0)

    async def request(ctx, reg, *, write=False, data=0, be=0xF, function=0):
        tag = rng.getrandbits(8)
        requester = rng.getrandbits(16)
        beat = {"hdr": {"fmt_type": TlpFmtType.CFGWR0 if write else TlpFmtType.CFGRD0,
                        "length": 1, "requester_id": requester, "tag": tag, "first_be": be,
                        "cfg_bus": rng.getrandbits(8), "cfg_device": rng.getrandbits(5),
                        "cfg_function": function, "cfg_reg": reg},
                "data": data, "keep": 1 if write else 0, "first": 1, "last": 1}
        await send(ctx, dut.rx, [layout.const(beat)], rng)
        (cpl,) = await recv(ctx, dut.tx, 1, rng)
        hdr = cpl.hdr
        assert (hdr.requester_id, hdr.tag, hdr.completer_id, hdr.byte_count) == \
            (requester, tag, completer_id, 4), f"completion header for DW {reg:#x}"
        assert cpl.first and cpl.last
        if function:
            assert hdr.fmt_type == TlpFmtType.CPL and hdr.status == CplStatus.UR
            return None
        assert hdr.status == CplStatus.SC
        if write:
            assert hdr.fmt_type == TlpFmtType.CPL and hdr.length == 0
            return None
        assert hdr.fmt_type == TlpFmtType.CPLD and hdr.length == 1 and cpl.keep & 1
        return cpl.data & 0xFFFF_FFFF

    async def tb(ctx):
        ctx.set(dut.completer_id, completer_id)
        # Every capability DW, in random order.
        for dw in rng.sample(sorted(expected), len(expected)):
            got = await request(ctx, dw)
            assert got == expected[dw], f"DW {dw:#x}: {got:#010x}, expected {expected[dw]:#010x}"
        # Outside the chain: the header, the core's capabilities' range, the rest of the
        # legacy space and the extended space read 0.
        chain = set(expected) | forwarded
        outside = [0, 0x10, 0x3C // 4] + [dw for dw in range(0x40 // 4, 0x100 // 4)
                                          if dw not in chain] + [0x40, 0x100, 1023]
        for dw in outside:
            assert await request(ctx, dw) == 0, f"DW {dw:#x} outside the chain"
        # Writes to read-only and unimplemented DWs: completed, ignored, nothing forwarded.
        for dw in rng.sample(sorted(expected), 4) + rng.sample(outside, 4):
            await request(ctx, dw, write=True, data=rng.getrandbits(32), be=rng.randrange(1, 16))
        for dw in expected:
            assert await request(ctx, dw) == expected[dw], f"DW {dw:#x} changed by a write"
        for dw in outside[:4]:
            assert await request(ctx, dw) == 0, f"DW {dw:#x} changed by a write"
        assert not ext_log, f"accesses forwarded for non-forwarded DWs: {ext_log}"
        # Forwarded DWs: reads and writes go to cfg_ext with their byte enables.
        for dw in sorted(forwarded):
            assert await request(ctx, dw) == ext_regs[dw]
            value, be = rng.getrandbits(32), rng.randrange(1, 16)
            await request(ctx, dw, write=True, data=value, be=be)
            assert ext_log[-1] == (dw, 1, be, value)
            assert await request(ctx, dw) == ext_regs[dw]
            assert ext_log[-1][:2] == (dw, 0)
        # A forwarded DW written with no byte enabled is completed without an access.
        count = len(ext_log)
        await request(ctx, min(forwarded), write=True, data=1, be=0)
        assert len(ext_log) == count
        # A function number that does not exist: Unsupported Request.
        await request(ctx, min(expected), function=rng.randrange(1, 8))
        await request(ctx, min(forwarded), write=True, function=1)
        assert len(ext_log) == count

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(ext_client)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("base,width", [(0xA8, 64), (0xC0, 128)])
def test_user_config_space_serves_the_chain(base, width):
    run(base, width)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_user_config_space_checks_its_parameters():
    with pytest.raises(ValueError, match="need 36 bytes but only 16 fit"):
        UserConfigSpace(vendor_caps=CAPS, base=0xF0)
    with pytest.raises(ValueError, match="DW aligned"):
        UserConfigSpace(vendor_caps=CAPS, base=0xAA)
    with pytest.raises(ValueError, match="at least one"):
        UserConfigSpace(vendor_caps=[])
    with pytest.raises(TypeError, match="VendorCapability"):
        UserConfigSpace(vendor_caps=[b"\x09"])


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_external_function_needs_msix_and_a_known_mode():
    with pytest.raises(ValueError, match="needs MSI-X"):
        PcieFunction(config="external", msix_vectors=0, vendor_caps=CAPS)
    with pytest.raises(ValueError, match="config must be one of"):
        PcieFunction(config="hard", vendor_caps=CAPS)
    with pytest.raises(ValueError, match="needs MSI-X"):
        device_params(DeviceParams(msix=False), config="external")
    # External mode: FunctionControl comes in on `core_control`; no INTx, no Device Status
    # input.
    members = PcieFunction(config="external", vendor_caps=CAPS).signature.members
    assert "core_control" in members and "intx" not in members and "dma_pending" not in members
