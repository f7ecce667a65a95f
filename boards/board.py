"""What every board target provides, and the report every build ends with."""
from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .device import DeviceParams, design_kind, design_name, make_standin, make_top

__all__ = ["BuildError", "BuildReport", "Board", "StageRunner", "run_tool", "yowasp_argv"]

log = logging.getLogger(__name__)


class BuildError(Exception):
    """A build that cannot go on. ``str()`` is the one line shown to the user: what is missing
    or failed, and what to do about it."""


@dataclass
class BuildReport:
    """The figures of one build; :meth:`write` puts them in ``report.json``.

    ``lut``/``ff``/``bram``/``dsp`` are cells used; the ``*_available`` fields are the part's
    totals. ``fmax_mhz`` is the achieved maximum frequency of the design's clock (``None``
    when no timing analysis ran, e.g. ``--dry-run``), ``target_mhz`` the clock it must meet.
    ``bitstream`` is a path, or ``None`` when no bitstream was made.
    """
    board: str
    device: str
    design: str
    standin: bool
    target_mhz: float
    lut: int | None = None
    ff: int | None = None
    bram: int | None = None
    dsp: int | None = None
    lut_available: int | None = None
    ff_available: int | None = None
    bram_available: int | None = None
    dsp_available: int | None = None
    fmax_mhz: float | None = None
    bitstream: str | None = None
    timing_met: bool | None = None
    flow: str = ""
    stages: dict[str, float] = field(default_factory=dict)

    def write(self, out: Path) -> Path:
        path = out / "report.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path


class StageRunner:
    """Runs a build's stages one after the other and reports each to ``on_stage``.

    ``on_stage(name)`` is called when a stage starts (the command line shows it with the time
    elapsed); the seconds each stage took end up in ``durations``.
    """

    def __init__(self, on_stage: Callable[[str], None] | None = None):
        self.on_stage = on_stage or (lambda name: None)
        self.durations: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("stage: %s", name)
        self.on_stage(name)
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations[name] = round(time.monotonic() - start, 2)


def run_tool(argv: Sequence[str], *, log_file: Path, cwd: Path, what: str) -> None:
    """Run a tool, its output going to ``log_file``; a non-zero exit is a :class:`BuildError`
    naming ``what`` and the log."""
    log.info("running %s (log %s)", " ".join(argv), log_file)
    with open(log_file, "w") as f:
        result = subprocess.run(list(argv), cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise BuildError(f"{what} failed (exit {result.returncode}): see {log_file}")


def yowasp_argv(package: str, function: str, args: Sequence[str]) -> list[str]:
    """A command line that runs a YoWASP tool from PyPI with this Python, whatever PATH is."""
    code = f"import sys, {package}; sys.exit({package}.{function}(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


class Board:
    """A board target. Subclasses set the class attributes and implement :meth:`build`."""
    name: str = ""
    fpga: str = ""              # the part, for people
    device: str = ""            # the part, for tools and report.json
    pcie: str = ""              # the PCIe link the board's edge connector offers
    toolchain: str = ""
    target_mhz: float = 0.0
    flow: str = ""              # one line: what `python -m boards.build` does for this board
    # The design factory (boards/device.py): make_top, make_top_pcie7x for a PCIe core that
    # owns the configuration space, or the stand-in (--standin).
    design = staticmethod(make_top)

    @property
    def standin(self) -> bool:
        return self.design is make_standin

    def params(self) -> DeviceParams:
        """The device parameters this board builds with."""
        raise NotImplementedError

    def describe_build(self) -> str:
        return f"{design_name(self.design)} ({design_kind(self.design)}); {self.flow}"

    def new_report(self) -> BuildReport:
        return BuildReport(board=self.name, device=self.device,
                           design=design_name(self.design), standin=self.standin,
                           target_mhz=self.target_mhz,
                           flow=self.flow)

    def build(self, out: Path, *, stages: StageRunner, dry_run: bool, seed: int) -> BuildReport:
        """Build into ``out``; return the report (the caller writes it and judges timing).
        Raise :class:`BuildError` for a missing tool or a failed stage."""
        raise NotImplementedError
