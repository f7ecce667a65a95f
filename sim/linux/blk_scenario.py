"""The RTL scenario: boot Linux against the RTL virtio-blk device and judge the run.

The simulation is one cocotb test (:mod:`sim.linux.rtl_tb`) started through
:func:`sim.runner.run` on the ``intx`` build of :mod:`sim.blk_device` (INTx only, 32-bit
BAR0, one queue, a 1 MiB disk): it resets the RTL, starts QEMU, serves the proxy with
:class:`~sim.linux.rtl_backend.RtlBackend` until the guest powers off, and writes what it saw
as JSON (:func:`run_rtl` reads it back). The guest runs ``scripts/blk.sh`` with the constants
below prepended.

Raw patterns: the host draws random sector contents (seeded; the seed is printed and
``SEED=`` replays it), hands them to the guest as base64, the guest writes them to
``/dev/vda`` with ``dd``, drops its caches, reads them back through the device and prints the
md5 of what it read; the host compares those digests with the digests of the bytes it drew.
The same is done once more at the end, over the file system, so the last thing on the disk
is known to the host.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hdl.pcie.spec import Cfg
from hdl.virtio.spec import Feature, feature_names
from sim.linux.guest import GuestImage, prepare_guest
from sim.linux.qemu import Check, ConsoleLine, parse_console

__all__ = ["VIRTIO_VENDOR_ID", "VIRTIO_BLK_DEVICE_ID", "Pattern", "make_patterns",
           "FILES", "blk_workload", "host_checks", "RtlReport", "run_rtl"]

VIRTIO_VENDOR_ID = 0x1AF4
VIRTIO_BLK_DEVICE_ID = 0x1042      # 0x1040 + virtio device ID 2 (virtio 1.2 §4.1.2.1)
BUILD = "intx"

FILES = (("a.bin", 1000), ("b.bin", 4096), ("dir/c.bin", 37_000), ("d.bin", 150_000))
"""Files the guest writes on the ext2 file system (name, bytes of random content)."""

_SCRIPT = Path(__file__).resolve().parent / "scripts" / "blk.sh"
_LOG_LINE = re.compile(r"^\[\s*([0-9.]+)\] (.*)$")


@dataclasses.dataclass(frozen=True)
class Pattern:
    sector: int
    data: bytes

    @property
    def count(self) -> int:
        return len(self.data) // 512

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()


def make_patterns(seed: int, sectors: int) -> list[Pattern]:
    """Random contents for a few places on the disk: its first 4 KiB, one odd sector, an
    unaligned 9-sector run, a run crossing a 4 KiB boundary, and the last 4 KiB."""
    rng = random.Random(seed)
    places = [(0, 8), (7 + 8 * rng.randrange(8, 16), 1), (301, 9),
              (8 * rng.randrange(40, 200) - 3, 6), (sectors - 8, 8)]
    return [Pattern(s, rng.randbytes(512 * n)) for s, n in places]


def blk_workload(patterns: list[Pattern], sectors: int, serial: str) -> str:
    """``scripts/blk.sh`` with the shared constants prepended as shell variables."""
    constants = {
        "VENDOR": f"{VIRTIO_VENDOR_ID:#06x}",
        "DEVICE": f"{VIRTIO_BLK_DEVICE_ID:#06x}",
        "SECTORS": str(sectors),
        "SERIAL": f"'{serial}'",
        "PATTERNS": '"' + " ".join(f"{p.sector}:{p.count}:{base64.b64encode(p.data).decode()}"
                                   for p in patterns) + '"',
        "FILES": '"' + " ".join(f"{name}:{size}" for name, size in FILES) + '"',
    }
    header = "".join(f"{name}={value}\n" for name, value in constants.items())
    return "# constants from sim/linux/blk_scenario.py\n" + header + _SCRIPT.read_text()


def _check(name: str, passed: bool, detail: str) -> Check:
    return Check(name, bool(passed), detail)


def guest_features(console) -> int | None:
    """The features the driver negotiated, from the guest's ``features`` line (sysfs prints
    one character per bit, bit 0 first)."""
    values = console.info_values("features")
    if not values:
        return None
    return sum(1 << i for i, c in enumerate(values[0].strip()) if c == "1")


def host_checks(result: dict, console, patterns: list[Pattern]) -> list[Check]:
    """What the host can verify about a finished RTL run (``result`` is the testbench's JSON)."""
    checks = []
    error = result.get("error")
    checks.append(_check("guest-finished", error is None and result.get("exit_code") == 0
                         and console.workload_rc == 0,
                         f"QEMU exit {result.get('exit_code')}, workload status "
                         f"{console.workload_rc}" + (f", {error}" if error else "")))

    cfg = result.get("config_accesses", [])
    resets = [i for i, a in enumerate(cfg) if a[1] == "reset"]
    first_reset = resets[0] if resets else len(cfg)
    qemu_probe = cfg[:first_reset]
    bar0_size = result.get("bar_size", [0])[0]
    sized = any(a[1] == "write" and a[2] == Cfg.BAR0 and a[3] == 0xFFFFFFFF for a in qemu_probe)
    checks.append(_check("qemu-probe", sized and bar0_size and not bar0_size & (bar0_size - 1),
                         f"{len(qemu_probe)} config accesses at realize, BAR0 sized to "
                         f"{bar0_size:#x} bytes"))

    firmware_done = result.get("firmware_done")
    firmware = [a for a in cfg[first_reset:] if firmware_done is not None and a[0] < firmware_done]
    vendor_read = any(a[1] == "read" and a[2] == Cfg.VENDOR_ID and a[5] & 0xFFFF == VIRTIO_VENDOR_ID
                      for a in firmware)
    bar0_sized = any(a[1] == "write" and a[2] == Cfg.BAR0 and a[3] == 0xFFFFFFFF for a in firmware)
    bar0_set = [a[3] for a in firmware if a[1] == "write" and a[2] == Cfg.BAR0
                and a[3] not in (0, 0xFFFFFFFF)]
    mem_on = any(a[1] == "write" and a[2] == Cfg.COMMAND and a[3] & Cfg.CMD_MEMORY_SPACE
                 for a in firmware)
    guest_bar0 = console.info_values("bar0")
    linux_bar0 = int(guest_bar0[0].split()[0], 16) if guest_bar0 else None
    checks.append(_check(
        "seabios-probe", vendor_read and bar0_sized and bar0_set and mem_on
        and linux_bar0 == bar0_set[-1],
        f"before handing over, SeaBIOS made {len(firmware)} config accesses of the RTL: read "
        f"the vendor ID {'yes' if vendor_read else 'NO'}, sized BAR0 "
        f"{'yes' if bar0_sized else 'NO'}, placed it at "
        f"{', '.join(hex(v) for v in bar0_set) or 'NOWHERE'}, enabled memory decoding "
        f"{'yes' if mem_on else 'NO'}; Linux sees BAR0 at "
        f"{hex(linux_bar0) if linux_bar0 is not None else '?'}"))

    features = guest_features(console)
    version_1 = features is not None and (features >> Feature.VERSION_1) & 1
    checks.append(_check(
        "features", version_1,
        f"negotiated {', '.join(feature_names(features)) if features is not None else 'nothing'}"
        f"; IN_ORDER {'negotiated' if features and (features >> Feature.IN_ORDER) & 1 else 'not negotiated (Linux 6.1 never does)'}"))

    for key, label in (("pattern", "raw-patterns"), ("final-pattern", "raw-patterns-final")):
        reported = {}
        for entry in console.info_values(key):
            sector, count, digest = entry.split()
            reported[(int(sector), int(count))] = digest
        wrong = [f"sector {p.sector}" for p in patterns
                 if reported.get((p.sector, p.count)) != p.md5]
        checks.append(_check(
            label, reported and not wrong,
            f"the md5 of each of the {len(patterns)} regions the guest read back through the "
            f"RTL equals the md5 of the bytes the host drew" if reported and not wrong else
            f"wrong or missing: {', '.join(wrong) or 'no pattern reported'}"))

    dma = result.get("dma", {})
    dma_status = result.get("dma_status", {})
    checks.append(_check(
        "dma", dma.get("read_requests", 0) > 0 and dma.get("write_requests", 0) > 0
        and not dma.get("unsupported_reads") and not dma.get("dropped_writes")
        and not any(dma_status.values()),
        f"{dma.get('read_requests', 0)} reads ({dma.get('read_bytes', 0)} bytes), "
        f"{dma.get('write_requests', 0)} writes ({dma.get('write_bytes', 0)} bytes) of guest "
        f"RAM; {dma.get('unsupported_reads', 0)} reads outside RAM, "
        f"{dma.get('dropped_writes', 0)} writes dropped; DMA engine status {dma_status}"))
    engine = result.get("engine_error", {})
    checks.append(_check("engine", not engine.get("kind"),
                         f"virtqueue engine error {engine}, stats {result.get('stats', {})}"))
    intx = result.get("intx", {})
    checks.append(_check("intx", intx.get("assertions", 0) > 0,
                         f"the RTL raised INTx {intx.get('assertions', 0)} time(s) "
                         f"({dma.get('intx_messages', 0)} Assert/Deassert messages)"))
    return checks


@dataclasses.dataclass
class RtlReport:
    result: dict
    console: object
    image: GuestImage
    seed: int
    guest_checks: list[Check]
    host_checks: list[Check]
    seconds: float
    run_dir: Path

    @property
    def checks(self) -> list[Check]:
        return self.guest_checks + self.host_checks

    @property
    def passed(self) -> bool:
        return bool(self.guest_checks) and all(c.passed for c in self.checks)

    @property
    def boot_seconds(self) -> float | None:
        begin = self.console.begin
        return begin.seconds if begin else None

    @property
    def workload_seconds(self) -> float | None:
        begin, end = self.console.begin, self.console.end
        return end.seconds - begin.seconds if begin and end else None

    @property
    def log_path(self) -> Path:
        return self.run_dir / "guest.log"


def _follow(path: Path, on_line: Callable[[ConsoleLine], None], stop: threading.Event) -> None:
    """Call ``on_line`` for each line of ``guest.log`` as the simulator process writes it."""
    while not path.exists() and not stop.is_set():
        time.sleep(0.2)
    if not path.exists():
        return
    with open(path) as f:
        pending = ""
        while True:
            chunk = f.read()
            if not chunk:
                if stop.is_set():
                    break
                time.sleep(0.2)
                continue
            pending += chunk
            *lines, pending = pending.split("\n")
            for text in lines:
                if m := _LOG_LINE.match(text):
                    on_line(ConsoleLine(float(m.group(1)), m.group(2)))


def run_rtl(run_dir: Path, *, seed: int | None = None, timeout: float = 600.0,
            kernel_package: str | None = None,
            on_line: Callable[[ConsoleLine], None] | None = None,
            on_status: Callable[[str], None] | None = None) -> RtlReport:
    """Prepare the guest, build the RTL (cached), boot the guest against it, judge the run."""
    from sim.blk_device import PRESETS, make_top
    from sim.runner import build, run

    knobs = PRESETS[BUILD]
    started = time.monotonic()
    if seed is None:
        seed = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    say = on_status or (lambda message: None)
    say("preparing the guest")
    image = prepare_guest(kernel_package=kernel_package)
    say("building the RTL (Amaranth -> Verilog -> Verilator; cached after the first run)")
    # A partial, not a lambda: the runner keys the build on the file defining a lambda.
    top = functools.partial(make_top, knobs)
    build(top, toplevel="blk_device", params=knobs, public="ports")
    patterns = make_patterns(seed, knobs["capacity"])
    workload = run_dir / "workload.sh"
    workload.write_text(blk_workload(patterns, knobs["capacity"], knobs["serial"]))
    result_file = run_dir / "result.json"
    result_file.unlink(missing_ok=True)
    (run_dir / "guest.log").unlink(missing_ok=True)
    job = {"run_dir": str(run_dir), "workload": str(workload), "timeout": timeout,
           "kernel_package": image.kernel_package, "result": str(result_file)}
    say(f"booting the guest against the RTL (SEED={seed})")
    stop = threading.Event()
    follower = None
    if on_line is not None:
        follower = threading.Thread(target=_follow, args=(run_dir / "guest.log", on_line, stop),
                                    daemon=True)
        follower.start()
    sim_error = None
    try:
        run(top, toplevel="blk_device", test_module="sim.linux.rtl_tb",
            params=knobs, testcase="linux_guest", public="ports", seed=seed,
            extra_env={"LINUX_JOB": json.dumps(job)})
    except AssertionError as exc:
        sim_error = str(exc)
    finally:
        stop.set()
        if follower is not None:
            follower.join(timeout=5)
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if sim_error and not result.get("error"):
        result["error"] = sim_error
    lines = [ConsoleLine(s, t) for s, t in result.get("lines", [])]
    console = parse_console(lines)
    return RtlReport(result, console, image, seed, console.checks,
                     host_checks(result, console, patterns), time.monotonic() - started, run_dir)
