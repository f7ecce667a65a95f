"""RHS Research Nitefury II (Artix-7 XC7A200T-2FBG484, M.2 M-key, PCIe Gen2 x4).

The device sits behind the Artix-7's Integrated Block for PCI Express (Vivado IP ``pcie_7x``,
Xilinx PG054), through the adapters in :mod:`hdl.pcie.xilinx7`. The build tree is made by
Amaranth's Vivado platform (``amaranth_boards.nitefury``, pins corrected below) and contains:

* ``top.v``: the Amaranth top: ``IBUFDS_GTE2`` for the reference clock, the ``pcie_7x_0``
  IP instance and :class:`~boards.pcie7x_device.Pcie7xDevice` (RX/TX adapters,
  :class:`~hdl.pcie.xilinx7.CfgStatus`, the design);
* ``top.xdc`` (pins) and ``pcie.xdc`` (reference clock, PERST#);
* ``top.tcl``: creates the project, generates the PCIe IP with ``create_ip -name pcie_7x``
  and one ``set_property CONFIG.*`` per setting (:func:`pcie_ip_config`), then synthesis,
  placement, routing, reports and the bitstream; ``build_top.sh`` runs it.

Vivado is not part of the PyPI toolchain: without it the build fails with one line, and
``--dry-run`` writes the complete tree to take to a machine that has Vivado.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from amaranth.build import Attrs, DiffPairs, PinsN, Resource, Subsignal
from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth_boards.nitefury import NitefuryIIPlatform

from .board import Board, BuildError, BuildReport, StageRunner, run_tool
from .config_space import PCIE7X_USER_CFG_START
from .device import DeviceParams, make_top_pcie7x
from .pcie7x_device import Pcie7xDevice

__all__ = ["NitefuryPlatform", "NitefuryTop", "NitefuryBoard", "pcie_ip_config", "pcie_ip_tcl",
           "IP_NAME", "read_vivado_utilization", "read_vivado_wns"]

IP_NAME = "pcie_7x_0"

# Link speed index -> pcie_7x's Link_Speed and Trgt_Link_Speed values; the user clock each
# needs for a 128-bit interface at x4 (PG054, "Interface Width" / "User Clock Frequency").
_LINK_SPEED = {1: ("2.5_GT/s", "4'h1"), 2: ("5.0_GT/s", "4'h2")}


class NitefuryPlatform(NitefuryIIPlatform):
    """``amaranth_boards``' Nitefury II with the M.2 PCIe pins as the PCIe core needs them.

    The upstream resource declares PERST# as an output and puts an ``IOSTANDARD`` on the GTP
    reference clock; here PERST# is an input (the host drives it, PCIe CEM §2.2) and the
    transceiver pins (refclk, lanes) carry only their package pins, which is all a GTP pin
    takes. The pin numbers are upstream's.
    """
    resources = [r for r in NitefuryIIPlatform.resources if r.name != "pcie"] + [
        Resource("pcie_x4", 0,
                 Subsignal("perst", PinsN("J1", dir="i"), Attrs(IOSTANDARD="LVCMOS33", PULLUP="TRUE")),
                 Subsignal("clkreq", PinsN("G1", dir="o"), Attrs(IOSTANDARD="LVCMOS33")),
                 Subsignal("clk", DiffPairs(p="F6", n="E6", dir="i")),
                 Subsignal("rx", DiffPairs(p="B10 B8 D11 D9", n="A10 A8 C11 C9", dir="i")),
                 Subsignal("tx", DiffPairs(p="B6 B4 D5 D7", n="A6 A4 C5 C7", dir="o"))),
    ]


def _hex(value: int, digits: int) -> str:
    return f"{value:0{digits}X}"


def pcie_ip_config(params: DeviceParams) -> list[tuple[str, str]]:
    """``CONFIG.*`` settings of the ``pcie_7x`` IP for ``params``, in the order they are set.

    Identity, BAR0, MSI-X table and PBA, link speed and width, Max_Payload_Size and the user
    configuration space that carries the virtio capabilities all come from ``params``; the
    rest are fixed choices explained beside them. Max_Read_Request_Size has no IP setting: it
    is the host's to program in Device Control, and the device's DMA engine keeps to the
    smaller of that and ``params.max_read_request_size``.
    """
    if params.tlp_width != 128:
        raise ValueError(f"the Nitefury build uses the 128-bit interface (125 MHz at Gen2 x4), "
                         f"not {params.tlp_width} bits")
    speed, target_speed = _LINK_SPEED[params.link_speed]
    if params.bar0_size % 1024:
        raise ValueError(f"BAR0 size {params.bar0_size:#x} is not a whole number of KiB")
    bar_kib = params.bar0_size // 1024
    bar_scale, bar_size = ("Kilobytes", bar_kib) if bar_kib < 1024 else ("Megabytes", bar_kib // 1024)
    cls = params.class_code
    config = [
        ("mode_selection", "Advanced"),             # needed for the user configuration space
        ("Device_Port_Type", "PCI_Express_Endpoint_device"),
        ("PCIe_Blk_Locn", "X0Y0"),                  # the Artix-7's only PCIe block
        ("Maximum_Link_Width", f"X{params.link_width}"),
        ("Link_Speed", speed),
        ("Trgt_Link_Speed", target_speed),
        ("Interface_Width", f"{params.tlp_width}_bit"),
        ("User_Clk_Freq", "125"),
        ("Ref_Clk_Freq", "100_MHz"),                # M.2 reference clock
        ("shared_logic_in_core", "true"),           # the core keeps its own PIPE clocking
        ("Vendor_ID", _hex(params.vendor_id, 4)),
        ("Device_ID", _hex(params.device_id, 4)),
        ("Revision_ID", _hex(params.revision_id, 2)),
        ("Subsystem_Vendor_ID", _hex(params.subsystem_vendor_id, 4)),
        ("Subsystem_ID", _hex(params.subsystem_id, 4)),
        ("Use_Class_Code_Lookup_Assistant", "false"),
        ("Class_Code_Base", _hex(cls >> 16, 2)),
        ("Class_Code_Sub", _hex((cls >> 8) & 0xFF, 2)),
        ("Class_Code_Interface", _hex(cls & 0xFF, 2)),
        ("Bar0_Enabled", "true"),
        ("Bar0_Type", "Memory"),
        ("Bar0_64bit", "true" if params.bar0_64bit else "false"),
        ("Bar0_Prefetchable", "false"),
        ("Bar0_Scale", bar_scale),
        ("Bar0_Size", str(bar_size)),
        *[(f"Bar{i}_Enabled", "false") for i in range(2 if params.bar0_64bit else 1, 6)],
        ("Expansion_Rom_Enabled", "false"),
        ("Max_Payload_Size", f"{params.max_payload_size}_bytes"),
        ("Extended_Tag_Field", "true" if params.ext_tag else "false"),
        ("Extended_Tag_Default", "false"),          # the host turns extended tags on
        ("Buf_Opt_BMA", "true"),                    # buffers sized for a bus-mastering device
        ("Trim_TLP_Digest", "true"),                # the adapters never see an ECRC
        ("Slot_Clock_Config", "true"),              # M.2 refclk is the slot's clock
        # Interrupts: MSI-X only. The block implements the MSI-X capability structure (at
        # 0x9C); the table and PBA are the device's, in BAR0 at its offsets. Table_Size is
        # N-1 encoded, as in the capability's Message Control register.
        ("MSI_Enabled", "false"),
        ("MSIx_Enabled", "true" if params.msix else "false"),
        ("MSIx_Table_Size", _hex(params.msix_vectors - 1, 3)),
        ("MSIx_Table_Offset", _hex(params.msix_table_offset, 8)),
        ("MSIx_Table_BIR", "BAR_0"),
        ("MSIx_PBA_Offset", _hex(params.msix_pba_offset, 8)),
        ("MSIx_PBA_BIR", "BAR_0"),
        ("IntX_Generation", "false"),
        ("Legacy_Interrupt", "NONE"),
        # Extended capabilities the block could add are left out, so 0x100 reads 0 (an
        # empty extended capability list, PCIe Base §7.6.3).
        ("DSN_Enabled", "false"),
        ("AER_Enabled", "false"),
        ("VC_Cap_Enabled", "false"),
        # The virtio vendor capabilities: configuration requests from DW 0x2A (byte 0xA8)
        # to 0xFF go to the device as CfgRd0/CfgWr0 TLPs, and the block's last capability
        # (MSI-X) links to 0xA8 (docs/boards.md, "Configuration space").
        ("PCI_CFG_Space", "true"),
        ("PCI_CFG_Space_Addr", _hex(PCIE7X_USER_CFG_START // 4, 2)),
        ("EXT_PCI_CFG_Space", "false"),
    ]
    if not params.msix:
        config = [(k, v) for k, v in config if not k.startswith("MSIx_") or k == "MSIx_Enabled"]
    return config


def pcie_ip_tcl(params: DeviceParams) -> str:
    """Tcl that creates, configures, generates and synthesizes the PCIe IP in the project."""
    lines = [
        "# PCIe: the 7-series Integrated Block for PCI Express (PG054), configured from the",
        "# device parameters by boards/nitefury.py (pcie_ip_config).",
        f"create_ip -name pcie_7x -vendor xilinx.com -library ip -module_name {IP_NAME}",
    ]
    lines += [f"set_property CONFIG.{key} {{{value}}} [get_ips {IP_NAME}]"
              for key, value in pcie_ip_config(params)]
    lines += [
        "# Max_Read_Request_Size is not an IP setting: the host programs it in Device Control",
        f"# and the DMA engine keeps to min(host setting, {params.max_read_request_size} bytes).",
        f"generate_target all [get_ips {IP_NAME}]",
        f"synth_ip [get_ips {IP_NAME}]",
    ]
    return "\n".join(lines)


class NitefuryTop(Elaboratable):
    """The FPGA top: reference clock buffer, PCIe IP, adapters, configuration status, design.

    The whole user side runs on the block's ``user_clk_out`` (125 MHz) and is reset by its
    ``user_reset_out``, so a link reset or PERST# resets the device.
    """

    def __init__(self, params: DeviceParams, design=make_top_pcie7x):
        self.params = params
        self.design = design

    def elaborate(self, platform):
        m = Module()
        params = self.params
        pins = platform.request("pcie_x4", 0, dir={"clk": "-", "rx": "-", "tx": "-"})

        m.domains.sync = sync = ClockDomain("sync")
        user_clk = Signal()
        user_reset = Signal()
        link_up = Signal()
        refclk = Signal()
        m.d.comb += [sync.clk.eq(user_clk), sync.rst.eq(user_reset)]

        m.submodules.refclk_buf = Instance(
            "IBUFDS_GTE2", i_I=pins.clk.p, i_IB=pins.clk.n, i_CEB=Const(0), o_O=refclk)

        m.submodules.device = dev = Pcie7xDevice(params, self.design)
        rx, tx = dev.m_axis_rx, dev.s_axis_tx
        to_turnoff = Signal()
        m.submodules.pcie = Instance(
            IP_NAME,
            i_sys_clk=refclk,
            i_sys_rst_n=~pins.perst.i,
            i_pipe_mmcm_rst_n=Const(1),
            i_pci_exp_rxp=pins.rx.p, i_pci_exp_rxn=pins.rx.n,
            o_pci_exp_txp=pins.tx.p, o_pci_exp_txn=pins.tx.n,
            o_user_clk_out=user_clk, o_user_reset_out=user_reset, o_user_lnk_up=link_up,
            # Receive (PG054 m_axis_rx_*); rx_np_ok/rx_np_req: always ready for non-posted.
            o_m_axis_rx_tdata=rx.payload.tdata, o_m_axis_rx_tkeep=rx.payload.tkeep,
            o_m_axis_rx_tlast=rx.payload.tlast, o_m_axis_rx_tuser=rx.payload.tuser,
            o_m_axis_rx_tvalid=rx.valid, i_m_axis_rx_tready=rx.ready,
            i_rx_np_ok=Const(1), i_rx_np_req=Const(1),
            # Transmit (PG054 s_axis_tx_*); the block may send its own configuration
            # completions whenever it asks (tx_cfg_gnt tied high).
            i_s_axis_tx_tdata=tx.payload.tdata, i_s_axis_tx_tkeep=tx.payload.tkeep,
            i_s_axis_tx_tlast=tx.payload.tlast, i_s_axis_tx_tuser=tx.payload.tuser,
            i_s_axis_tx_tvalid=tx.valid, o_s_axis_tx_tready=tx.ready,
            i_tx_cfg_gnt=Const(1),
            # Flow control: show the transmit credits available (fc_sel = 3'b100).
            i_fc_sel=Const(0b100, 3),
            # Configuration status, to FunctionControl.
            o_cfg_command=dev.cfg_command, o_cfg_dcommand=dev.cfg_dcommand,
            o_cfg_bus_number=dev.cfg_bus_number, o_cfg_device_number=dev.cfg_device_number,
            o_cfg_function_number=dev.cfg_function_number,
            o_cfg_interrupt_msixenable=dev.cfg_interrupt_msixenable,
            o_cfg_interrupt_msixfm=dev.cfg_interrupt_msixfm,
            # The device signals MSI-X with memory writes of its own; the block's interrupt
            # request port stays idle.
            i_cfg_interrupt=Const(0), i_cfg_interrupt_assert=Const(0),
            i_cfg_interrupt_di=Const(0, 8), i_cfg_interrupt_stat=Const(0),
            i_cfg_pciecap_interrupt_msgnum=Const(0, 5),
            # Power management: nothing to finish before a PME_Turn_Off, so acknowledge it.
            o_cfg_to_turnoff=to_turnoff, i_cfg_turnoff_ok=to_turnoff,
            i_cfg_trn_pending=Const(0), i_cfg_pm_wake=Const(0),
            i_cfg_pm_halt_aspm_l0s=Const(0), i_cfg_pm_halt_aspm_l1=Const(0),
            i_cfg_pm_force_state_en=Const(0), i_cfg_pm_force_state=Const(0, 2),
            i_cfg_dsn=Const(0, 64),
            # Error reporting: the device reports nothing through the block.
            i_cfg_err_cor=Const(0), i_cfg_err_ur=Const(0), i_cfg_err_ecrc=Const(0),
            i_cfg_err_cpl_timeout=Const(0), i_cfg_err_cpl_abort=Const(0),
            i_cfg_err_cpl_unexpect=Const(0), i_cfg_err_posted=Const(0),
            i_cfg_err_locked=Const(0), i_cfg_err_tlp_cpl_header=Const(0, 48),
            # Configuration management port unused: the host owns the configuration space.
            i_cfg_mgmt_di=Const(0, 32), i_cfg_mgmt_byte_en=Const(0, 4),
            i_cfg_mgmt_dwaddr=Const(0, 10), i_cfg_mgmt_wr_en=Const(0), i_cfg_mgmt_rd_en=Const(0),
            i_cfg_mgmt_wr_readonly=Const(0), i_cfg_mgmt_wr_rw1c_as_rw=Const(0),
            # Physical layer: no directed speed or width changes.
            i_pl_directed_link_change=Const(0, 2), i_pl_directed_link_width=Const(0, 2),
            i_pl_directed_link_speed=Const(0), i_pl_directed_link_auton=Const(0),
            i_pl_upstream_prefer_deemph=Const(1),
        )

        # CLKREQ# asserted: the device always wants the reference clock.
        m.d.comb += pins.clkreq.o.eq(1)
        m.d.comb += platform.request("m2led", 0).o.eq(link_up)
        m.d.comb += platform.request("led", 0).o.eq(link_up)
        return m


def read_vivado_utilization(text: str) -> dict[str, tuple[int, int]]:
    """``{"lut"|"ff"|"bram"|"dsp": (used, available)}`` from ``report_utilization`` output.

    The rows read are "Slice LUTs", "Slice Registers", "Block RAM Tile" and "DSPs" of the
    summary tables: the first number after the name is Used, the last but one is Available
    (Util% is last), whatever columns the Vivado version puts between them.
    """
    rows = {"lut": "Slice LUTs", "ff": "Slice Registers", "bram": "Block RAM Tile", "dsp": "DSPs"}
    out = {}
    for key, name in rows.items():
        match = re.search(rf"^\|\s*{re.escape(name)}\*?\s*\|(.*)$", text, re.MULTILINE)
        if not match:
            continue
        cells = [c.strip() for c in match.group(1).split("|") if c.strip()]
        out[key] = (round(float(cells[0])), round(float(cells[-2])))
    return out


def read_vivado_wns(text: str) -> float | None:
    """Worst Negative Slack (ns) of the "Design Timing Summary" of ``report_timing_summary``."""
    match = re.search(r"WNS\(ns\)[^\n]*\n\s*-+[^\n]*\n\s*(-?\d+\.\d+)", text)
    return float(match.group(1)) if match else None


class NitefuryBoard(Board):
    name = "nitefury"
    platform = NitefuryPlatform
    fpga = "Xilinx Artix-7 XC7A200T-2FBG484 (Nitefury II, M.2 M-key)"
    device = "xc7a200t-fbg484-2"
    pcie = "Gen2 x4, 7-series hard block (pcie_7x, 128-bit user interface)"
    toolchain = "Vivado (not on PyPI; --dry-run writes the tree)"
    target_mhz = 125.0
    flow = "Vivado: pcie_7x IP + synthesis, implementation, bitstream"
    # The hard block answers configuration requests itself except the user-defined range,
    # so the device is built with an external configuration space.
    design = staticmethod(make_top_pcie7x)

    def params(self) -> DeviceParams:
        return DeviceParams(tlp_width=128, link_speed=2, link_width=4)

    def _plan(self):
        platform = self.platform(toolchain="Vivado")
        params = self.params()
        period = 1000 / 100     # the M.2 reference clock, 100 MHz
        platform.add_file("pcie.xdc", "\n".join([
            "# Written by boards/nitefury.py. The PCIe IP's own XDC adds the user clocks.",
            f"create_clock -name pcie_refclk -period {period:.3f} [get_ports pcie_x4_0__clk__p]",
            "# PERST# is asynchronous to every clock.",
            "set_false_path -from [get_ports pcie_x4_0__perst__io]",
            "",
        ]))
        return platform.prepare(NitefuryTop(params, self.design), name="top",
                                script_after_read=pcie_ip_tcl(params))

    def build(self, out: Path, *, stages: StageRunner, dry_run: bool, seed: int) -> BuildReport:
        report = self.new_report()
        with stages.stage("elaborate (Amaranth to Verilog, XDC, Vivado Tcl)"):
            plan = self._plan()
        with stages.stage("write build tree"):
            plan.extract(out)
        if dry_run:
            return report
        with stages.stage("look for Vivado"):
            if shutil.which("vivado") is None:
                raise BuildError("Vivado not found on PATH: source Vivado's settings64.sh "
                                 "(Artix-7 support needed) and run again, or use --dry-run, "
                                 f"which still writes the complete build tree to {out}")
        with stages.stage("Vivado (IP, synthesis, implementation, bitstream)"):
            run_tool(["sh", "build_top.sh"], log_file=out / "vivado.stdout.log", cwd=out,
                     what="the Vivado build")
        with stages.stage("report"):
            self.read_reports(out, report)
        return report

    def read_reports(self, out: Path, report: BuildReport) -> None:
        """Fill ``report`` from Vivado's placed utilization and routed timing reports."""
        try:
            util = read_vivado_utilization((out / "top_utilization_place.rpt").read_text())
            wns = read_vivado_wns((out / "top_timing.rpt").read_text())
        except OSError as exc:
            raise BuildError(f"Vivado left no report ({exc}): see {out / 'top.log'}") from None
        for key, (used, available) in util.items():
            setattr(report, key, used)
            setattr(report, f"{key}_available", available)
        if wns is not None:
            period = 1000 / self.target_mhz
            report.fmax_mhz = round(1000 / (period - wns), 2)
            report.timing_met = wns >= 0
        bitstream = out / "top.bit"
        report.bitstream = str(bitstream) if bitstream.exists() else None
