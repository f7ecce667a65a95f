"""CfgStatus: the 7-series block's cfg_* outputs as FunctionControl (PCIe Base §7.5.1.1.3,
§7.5.3.4, §2.2.6.2), with the bit positions written here from the spec."""
import os
import random

from amaranth.sim import Simulator

from hdl.pcie.xilinx7 import CfgStatus


def test_cfg_status_fields():
    seed = int(os.environ.get("SEED", random.randrange(2**32)))
    print(f"SEED={seed}")
    rng = random.Random(seed)
    dut = CfgStatus()

    async def bench(ctx):
        for _ in range(50):
            command, dcommand = rng.getrandbits(16), rng.getrandbits(16)
            bus, dev, fn = rng.getrandbits(8), rng.getrandbits(5), rng.getrandbits(3)
            msix, fm = rng.getrandbits(1), rng.getrandbits(1)
            ctx.set(dut.cfg_command, command)
            ctx.set(dut.cfg_dcommand, dcommand)
            ctx.set(dut.cfg_bus_number, bus)
            ctx.set(dut.cfg_device_number, dev)
            ctx.set(dut.cfg_function_number, fn)
            ctx.set(dut.cfg_interrupt_msixenable, msix)
            ctx.set(dut.cfg_interrupt_msixfm, fm)
            await ctx.tick()
            f = ctx.get(dut.function)
            assert f.requester_id == (bus << 8) | (dev << 3) | fn
            assert f.memory_space_en == (command >> 1) & 1
            assert f.bus_master_en == (command >> 2) & 1
            assert f.interrupt_disable == (command >> 10) & 1
            assert f.max_payload_size == (dcommand >> 5) & 7
            assert f.ext_tag_en == (dcommand >> 8) & 1
            assert f.max_read_request_size == (dcommand >> 12) & 7
            assert (f.msix_enable, f.msix_function_mask) == (msix, fm)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
