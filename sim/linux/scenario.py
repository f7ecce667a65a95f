"""The stand-in scenario: boot Linux against :class:`StandinDevice` and judge the run.

The guest runs ``scripts/standin.sh`` (device discovery in sysfs, ``devmem`` register
accesses, configuration writes through sysfs, DMA copies in a reserved buffer, the INTx pending
state, and the ext2-on-loop check of the guest image). Its constants are prepended from the
Python definitions, so the guest and the device share them.

The DMA buffer: ``memmap=64K$0x7000000`` on the kernel command line makes 64 KiB of guest RAM
"reserved" to Linux. Such memory is not System RAM, so ``/dev/mem`` may read and write it even
with Debian's ``CONFIG_STRICT_DEVMEM`` (which forbids System RAM above 1 MiB), and nothing else
in the guest uses it; to QEMU it is ordinary RAM in the shared memfd, so the device's DMA
reaches it through :class:`GuestMemory`.

Then the host checks what only it can see (:func:`host_checks`): QEMU's own probe at realize
time and SeaBIOS' enumeration (the configuration accesses made before SeaBIOS printed
:data:`~sim.linux.qemu.FIRMWARE_DONE_LINE`), the device's record of every copy against the
digests the guest printed, the INTx edges against the count the guest expects, and the memory
map QEMU shared.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from hdl.pcie.spec import Cfg
from sim.linux import standin
from sim.linux.guest import GuestImage, prepare_guest
from sim.linux.proxy import CfgRead, CfgWrite, Command, DeviceReset
from sim.linux.qemu import Check, ConsoleLine, GuestRun, run_guest
from sim.linux.standin import Reg, StandinDevice

__all__ = ["BUF_BASE", "BUF_SIZE", "NOT_RAM", "standin_workload", "standin_kernel_args",
           "host_checks", "Report", "run_standin"]

BUF_BASE = 0x0700_0000      # 112 MiB: inside the 256 MiB of guest RAM, above the kernel's image
BUF_SIZE = 0x10000
NOT_RAM = 0x4000_0000       # 1 GiB: beyond guest RAM and below the PCI hole

_SCRIPT = Path(__file__).resolve().parent / "scripts" / "standin.sh"


def standin_workload() -> str:
    """``scripts/standin.sh`` with the shared constants prepended as shell variables."""
    constants = {
        "VENDOR": f"{standin.STANDIN_VENDOR_ID:#06x}",   # formatted as sysfs prints them
        "DEVICE": f"{standin.STANDIN_DEVICE_ID:#06x}",
        "SUBSYSTEM": f"{standin.STANDIN_DEVICE_ID:#06x}",
        "CLASS": f"{standin.STANDIN_CLASS:#08x}",
        "REVISION": f"{standin.STANDIN_REVISION:#04x}",
        "BAR0_SIZE": standin.BAR0_SIZE,
        "MAGIC": f"{standin.MAGIC:#x}",
        "VERSION": f"{standin.VERSION:#x}",
        **{f"REG_{reg.name}": f"{reg.value:#x}" for reg in Reg},
        "CTRL_START": standin.CTRL_START,
        "CTRL_DONE": standin.CTRL_DONE,
        "CTRL_ERROR": standin.CTRL_ERROR,
        "IRQ_DMA_DONE": standin.IRQ_DMA_DONE,
        "DMA_MAX_LEN": standin.DMA_MAX_LEN,
        "BUF_BASE": f"{BUF_BASE:#x}",
        "BUF_SIZE": BUF_SIZE,
        "NOT_RAM": f"{NOT_RAM:#x}",
    }
    header = "".join(f"{name}={value}\n" for name, value in constants.items())
    return "# constants from sim/linux/scenario.py\n" + header + _SCRIPT.read_text()


def standin_kernel_args() -> list[str]:
    return [f"memmap={BUF_SIZE // 1024}K${BUF_BASE:#x}"]


def _check(name: str, passed: bool, detail: str) -> Check:
    return Check(name, bool(passed), detail)


def host_checks(run: GuestRun, device: StandinDevice) -> list[Check]:
    """What the host can verify about a finished stand-in run."""
    checks = []
    console, server = run.console, run.server
    checks.append(_check("guest-finished", run.error is None and run.exit_code == 0
                         and console.workload_rc == 0,
                         f"QEMU exit {run.exit_code}, workload status {console.workload_rc}"
                         + (f", {run.error}" if run.error else "")))

    resets = [i for i, (_, req, _) in enumerate(run.accesses) if isinstance(req, DeviceReset)]
    first_reset = resets[0] if resets else len(run.accesses)
    qemu_probe = run.accesses[:first_reset]
    sized = any(isinstance(r, CfgWrite) and r.addr == Cfg.BAR0 and r.value == 0xFFFFFFFF
                for _, r, _ in qemu_probe)
    checks.append(_check("qemu-probe", sized and server.bars.size[0] == standin.BAR0_SIZE,
                         f"{len(qemu_probe)} config accesses at realize, BAR0 sized to "
                         f"{server.bars.size[0]:#x} bytes"))

    firmware = [(req, res) for pos, req, res in run.accesses[first_reset:]
                if run.firmware_done is not None and pos < run.firmware_done]
    vendor_read = any(isinstance(r, CfgRead) and r.addr == Cfg.VENDOR_ID and
                      res & 0xFFFF == standin.STANDIN_VENDOR_ID for r, res in firmware)
    bar0_sized = any(isinstance(r, CfgWrite) and r.addr == Cfg.BAR0 and r.value == 0xFFFFFFFF
                     for r, _ in firmware)
    bar0_set = [r.value for r, _ in firmware if isinstance(r, CfgWrite) and r.addr == Cfg.BAR0
                and r.value not in (0, 0xFFFFFFFF)]
    mem_on = any(isinstance(r, CfgWrite) and r.addr == Cfg.COMMAND and r.value & Cfg.CMD_MEMORY_SPACE
                 for r, _ in firmware)
    guest_bar0 = console.info_values("bar0")
    seabios_ok = (vendor_read and bar0_sized and bar0_set and mem_on and guest_bar0
                  and int(guest_bar0[0], 16) == bar0_set[-1])
    checks.append(_check(
        "seabios-probe", seabios_ok,
        f"before handing over, SeaBIOS made {len(firmware)} config accesses: read the vendor ID "
        f"{'yes' if vendor_read else 'NO'}, sized BAR0 {'yes' if bar0_sized else 'NO'}, placed it "
        f"at {', '.join(hex(v) for v in bar0_set) or 'NOWHERE'}, enabled memory decoding "
        f"{'yes' if mem_on else 'NO'}; Linux sees BAR0 at {guest_bar0[0] if guest_bar0 else '?'}"))

    reported = console.info_values("dma")
    done = {(src, dst, length): digest for src, dst, length, digest in device.copies if digest}
    mismatched = []
    for entry in reported:
        src, dst, length, digest = entry.split()
        if done.get((int(src, 16), int(dst, 16), int(length))) != digest:
            mismatched.append(entry)
    checks.append(_check("dma-crosscheck", reported and not mismatched,
                         f"{len(reported)} copies the guest verified match the bytes the device "
                         f"moved (sha256)" if reported and not mismatched else
                         f"no match in the device's record for: {mismatched or 'no copies reported'}"))

    expected = console.info_values("intx-assertions-expected")
    intx = server.interrupt
    checks.append(_check("intx", expected and intx.assertions == int(expected[0])
                         and server.counts[Command.SET_IRQFD] == 1 and intx.signals == intx.assertions,
                         f"INTx rose {intx.assertions} time(s) (guest expects "
                         f"{expected[0] if expected else '?'}), irqfd written {intx.signals} time(s)"))

    covered = any(r.gpa <= BUF_BASE and BUF_BASE + BUF_SIZE <= r.gpa + r.size
                  for r in run.memory_map)
    ram = sum(r.size for r in run.memory_map)
    checks.append(_check("memory-map", covered and server.counts[Command.SYNC_SYSMEM] > 0,
                         f"{server.counts[Command.SYNC_SYSMEM]} SYNC_SYSMEM messages; the last map "
                         f"has {len(run.memory_map)} section(s), {ram / 2**20:.1f} MiB, "
                         f"{'covering' if covered else 'NOT covering'} the DMA buffer"))
    return checks


@dataclasses.dataclass
class Report:
    run: GuestRun
    device: StandinDevice
    image: GuestImage
    guest_checks: list[Check]
    host_checks: list[Check]

    @property
    def checks(self) -> list[Check]:
        return self.guest_checks + self.host_checks

    @property
    def passed(self) -> bool:
        return bool(self.guest_checks) and all(c.passed for c in self.checks)

    @property
    def boot_seconds(self) -> float | None:
        """QEMU start until the workload began (firmware, kernel, modules)."""
        begin = self.run.console.begin
        return begin.seconds if begin else None

    @property
    def workload_seconds(self) -> float | None:
        begin, end = self.run.console.begin, self.run.console.end
        return end.seconds - begin.seconds if begin and end else None


def run_standin(run_dir: Path, *, timeout: float = 300.0, kernel_package: str | None = None,
                on_line: Callable[[ConsoleLine], None] | None = None,
                make_device: Callable[..., StandinDevice] = StandinDevice) -> Report:
    """Prepare the guest, boot it against the stand-in device and check the outcome.

    ``kernel_package`` picks another Debian kernel (see :func:`prepare_guest`);
    ``make_device(memory, interrupt)`` replaces the device (tests use a faulty one).
    """
    image = prepare_guest(kernel_package=kernel_package)
    run, device = run_guest(make_device, image, standin_workload(), run_dir,
                            kernel_args=standin_kernel_args(), timeout=timeout, on_line=on_line)
    return Report(run, device, image, run.console.checks, host_checks(run, device))
