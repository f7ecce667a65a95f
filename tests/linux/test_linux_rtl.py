"""End to end: Debian's Linux in QEMU drives the RTL virtio-blk device through the proxy.

The RTL (the ``intx`` build of sim/blk_device.py) runs in Verilator through cocotb; the first
run builds it (about 3 minutes on 2 cores, cached under build/sim/), then a run takes 25 s
(quiet machine) to 2 minutes (loaded) under TCG. The run's random patterns print their seed;
``SEED=`` replays them.
"""
import time

import pytest

from hdl.virtio.spec import Feature
from sim.linux.blk_scenario import guest_features, run_rtl


@pytest.mark.slow
def test_linux_guest_drives_the_rtl_device(tmp_path):
    started = time.monotonic()
    report = run_rtl(tmp_path / "run", timeout=480)
    seconds = time.monotonic() - started
    print(f"SEED={report.seed}: boot {report.boot_seconds} s, workload "
          f"{report.workload_seconds} s, total {seconds:.1f} s; guest log {report.log_path}")
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert not failed, f"failed checks {failed}; SEED={report.seed}; guest log {report.log_path}"
    assert report.passed
    names = {c.name for c in report.guest_checks}
    assert {"pci-device", "pci-driver", "virtio-device-id", "virtio-driver", "virtio-status",
            "vda-size", "vda-serial", "mkfs", "mount", "umount", "files", "raw-final"} <= names
    assert sum(name.startswith("raw-pattern-") for name in names) == 5
    assert {c.name for c in report.host_checks} == {
        "guest-finished", "qemu-probe", "seabios-probe", "features", "raw-patterns",
        "raw-patterns-final", "dma", "engine", "intx"}
    features = guest_features(report.console)
    assert (features >> Feature.VERSION_1) & 1
    # Linux 6.1's virtio_ring never negotiates VIRTIO_F_IN_ORDER: this run covers the
    # device's out-of-order path (docs/linux-guest.md).
    assert not (features >> Feature.IN_ORDER) & 1
    stats = report.result["stats"]
    assert stats["elements"] == stats["buffers_used"] > 50
