"""cocotb side of ``python -m sim.linux``: a Linux guest in QEMU drives the RTL device.

:func:`linux_guest` owns the whole run: it starts the clock and resets the RTL, starts QEMU
(:class:`~sim.linux.qemu.QemuGuest`) with the proxy device on a socket pair, and serves that
socket with :class:`~sim.linux.rtl_backend.RtlBackend` until the guest powers off (QEMU then
closes the socket). Waiting for QEMU's next message blocks the simulator, so simulated time
only passes while an access is served. A watchdog thread kills QEMU after the job's timeout,
which ends the run the same way.

The job comes as JSON in ``LINUX_JOB`` (run folder, workload script, timeout, kernel package,
result file); the result, written as JSON, holds the console lines, the configuration accesses
(for the host's SeaBIOS check), the proxy's counters, what the device did to guest memory and
the RTL's observability outputs at the end (:mod:`sim.linux.blk_scenario` judges it).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotb.utils import get_sim_time

from hdl.pcie.dma.layouts import DmaStatus
from hdl.virtio.virtqueue_port import VirtqError, VirtqStats
from sim.blk_device import CLOCK_NS
from sim.layout import unpack
from sim.linux.guest import prepare_guest
from sim.linux.proxy import CfgRead, CfgWrite, DeviceReset, ProxyServer
from sim.linux.qemu import FIRMWARE_DONE_LINE, QemuGuest
from sim.linux.rtl_backend import RtlBackend


def _access(position: int, request, result: int) -> list | None:
    """A configuration access or reset as ``[console bytes, kind, addr, value, size, result]``."""
    if isinstance(request, CfgRead):
        return [position, "read", request.addr, 0, request.size, result]
    if isinstance(request, CfgWrite):
        return [position, "write", request.addr, request.value, request.size, 0]
    if isinstance(request, DeviceReset):
        return [position, "reset", 0, 0, 0, 0]
    return None


@cocotb.test()
async def linux_guest(dut):
    """Boot the guest against the RTL and serve it until it powers off."""
    job = json.loads(os.environ["LINUX_JOB"])
    params = json.loads(os.environ["DUT_PARAMS"])
    log = logging.getLogger("cocotb.linux")
    run_dir = Path(job["run_dir"])
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.function_reset.value = 0
    dut.rx__valid.value = 0
    dut.tx__ready.value = 1
    await ClockCycles(dut.clk, 10)
    dut.rst.value = 0
    # The reorder buffers clear their memories after reset.
    reset_cycles = params["reorder_depth"] + 100
    await ClockCycles(dut.clk, reset_cycles)

    image = prepare_guest(kernel_package=job["kernel_package"])
    guest = QemuGuest(image, Path(job["workload"]).read_text(), run_dir)
    accesses: list[list] = []
    sock = guest.start()

    def observe(request, result):
        entry = _access(len(guest.raw), request, result)
        if entry is not None:
            accesses.append(entry)

    server = ProxyServer(sock, observer=observe)
    backend = RtlBackend(dut, server.memory, server.interrupt,
                         lambda bar: server.bars.base[bar], width=params["width"],
                         reset_cycles=reset_cycles)
    expired = threading.Event()

    def expire():
        expired.set()
        guest.kill()

    watchdog = threading.Timer(job["timeout"], expire)
    watchdog.daemon = True
    watchdog.start()
    error = None
    exit_code = None
    started = time.monotonic()
    try:
        await server.serve_async(backend)
    except Exception as exc:    # reported in the result; QEMU cannot go on without the device
        log.error("serving the guest failed:\n%s", traceback.format_exc())
        error = f"proxy server failed: {exc!r}"
        guest.kill()
    try:
        exit_code = guest.wait(timeout=30)
    except TimeoutError as exc:
        error = error or str(exc)
    watchdog.cancel()
    if expired.is_set():
        error = f"the guest was killed after {job['timeout']:.0f} s"
    served = time.monotonic() - started
    result = {
        "exit_code": exit_code,
        "error": error,
        "seconds": guest.seconds,
        "served_seconds": served,
        "lines": [[line.seconds, line.text] for line in guest.lines],
        "config_accesses": accesses,
        "firmware_done": guest.output_offset(FIRMWARE_DONE_LINE),
        "counts": {command.name: n for command, n in server.counts.items()},
        "bar_base": server.bars.base,
        "bar_size": server.bars.size,
        "memory_map": [[r.gpa, r.size] for r in server.memory.regions],
        "intx": {"assertions": server.interrupt.assertions,
                 "signals": server.interrupt.signals},
        "dma": vars(backend.dma),
        "accesses": backend.accesses,
        "cycles": backend.cycles,
        "sim_time_ns": get_sim_time("ns"),
        "stats": unpack(VirtqStats, int(dut.stats.value)),
        "dma_status": unpack(DmaStatus, int(dut.dma_status.value)),
        "engine_error": unpack(VirtqError, int(dut.engine_error.value)),
        "device_status": int(dut.device_status.value),
        "kernel": f"{image.kernel_package} {image.kernel_version} ({image.boot} boot)",
        "busybox": image.busybox_version,
    }
    server.close()
    Path(job["result"]).write_text(json.dumps(result, indent=1, default=str))
    assert error is None, error
