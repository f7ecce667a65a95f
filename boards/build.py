"""``python -m boards.build``: build the device for a board, with progress and a report.

Exit status: 0 when the build (or ``--dry-run``) finished and met timing; 1 when a tool is
missing, a stage failed, or timing was missed without ``--allow-timing-fail``; 2 for a bad
command line. A failure ends with exactly one line on stderr saying what is missing or
failed and what to do.
"""
from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .board import Board, BuildError, BuildReport, StageRunner
from .device import make_standin
from .nitefury import NitefuryBoard
from .versa_ecp5_5g import VersaEcp55GBoard

__all__ = ["BOARDS", "DEFAULT_BOARD", "main"]

BOARDS: dict[str, Board] = {board.name: board for board in (VersaEcp55GBoard(), NitefuryBoard())}
DEFAULT_BOARD = "versa_ecp5_5g"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m boards.build",
        description="Build the virtio-inorder device for an FPGA board: show progress, then a "
                    "table of resources and Fmax, and write report.json in the output folder.")
    parser.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(BOARDS), metavar="NAME",
                        help=f"board to build for (default {DEFAULT_BOARD}; --list shows all)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default build/boards/NAME in the project)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the complete build tree (Verilog, constraints, scripts) but "
                             "run no synthesis or implementation tool")
    parser.add_argument("--seed", type=int, default=1, metavar="N",
                        help="placement seed for tools that take one (nextpnr); default 1")
    parser.add_argument("--list", action="store_true",
                        help="list the boards (FPGA, PCIe link, toolchain, what is built) and exit")
    parser.add_argument("--standin", action="store_true",
                        help="build the small stand-in function instead of the device: a quick "
                             "check of a board's flow and toolchain (minutes less)")
    parser.add_argument("--allow-timing-fail", action="store_true",
                        help="exit 0 even when the achieved Fmax is below the target clock")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each tool command")
    return parser


def _list(console: Console) -> None:
    for name, board in BOARDS.items():
        table = Table(title=f"--board {name}" + (" (default)" if name == DEFAULT_BOARD else ""),
                      show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value", overflow="fold")
        table.add_row("FPGA", board.fpga)
        table.add_row("PCIe link", board.pcie)
        table.add_row("toolchain", board.toolchain)
        table.add_row("target clock", f"{board.target_mhz:g} MHz")
        table.add_row("builds", board.describe_build())
        console.print(table)


def _share(used: int | None, available: int | None) -> str:
    if used is None:
        return "-"
    if not available:
        return f"{used}"
    return f"{used} / {available} ({100 * used / available:.1f}%)"


def _summary(console: Console, report: BuildReport, report_path: Path) -> None:
    table = Table(title=f"{report.board}: {report.device}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("design", report.design + (" (stand-in, see docs/boards.md)"
                                             if report.standin else ""))
    table.add_row("flow", report.flow)
    for label, key in (("LUT", "lut"), ("FF", "ff"), ("BRAM", "bram"), ("DSP", "dsp")):
        table.add_row(label, _share(getattr(report, key), getattr(report, f"{key}_available")))
    if report.fmax_mhz is None:
        timing = f"not analysed (target {report.target_mhz:g} MHz)"
    else:
        verdict = "met" if report.timing_met else "MISSED"
        timing = f"{report.fmax_mhz:.1f} MHz achieved, target {report.target_mhz:g} MHz: {verdict}"
    table.add_row("Fmax", timing)
    table.add_row("bitstream", report.bitstream or "none")
    table.add_row("report", str(report_path))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    console = Console()
    if args.list:
        _list(console)
        return 0

    board = BOARDS[args.board]
    if args.standin and not board.standin:
        board = copy.copy(board)
        board.design = make_standin
    out = (args.out or PROJECT_ROOT / "build" / "boards" / board.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"building [bold]{board.name}[/] ({board.fpga}) into {out}"
                  f"{' (dry run)' if args.dry_run else ''}: {board.describe_build()}")

    columns = (TextColumn("{task.fields[status]:>7}"), TextColumn("{task.description}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        current: list[int] = []

        def finish(status: str) -> None:
            if current:
                progress.update(current[0], status=status, completed=1)
                progress.stop_task(current[0])
                current.clear()

        def on_stage(name: str) -> None:
            finish("[green]done[/]")
            current.append(progress.add_task(name, total=1, status="[yellow]running[/]"))

        stages = StageRunner(on_stage)
        try:
            report = board.build(out, stages=stages, dry_run=args.dry_run, seed=args.seed)
        except BuildError as exc:
            finish("[red]FAILED[/]")
            progress.stop()
            print(f"boards.build: error: {exc}", file=sys.stderr)
            return 1
        finish("[green]done[/]")

    report.stages = stages.durations
    report_path = report.write(out)
    _summary(console, report, report_path)
    if report.timing_met is False and not args.allow_timing_fail:
        print(f"boards.build: error: timing missed: {report.fmax_mhz:.1f} MHz achieved, "
              f"{report.target_mhz:g} MHz needed (see the place-and-route log in {out}); "
              f"pass --allow-timing-fail to accept it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
