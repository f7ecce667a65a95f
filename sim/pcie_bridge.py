"""cocotbext-pcie device whose function is the RTL: ``Tlp`` objects <-> the raw TLP streams.

The RTL owns configuration space and everything else; the bridge only carries TLPs:

* downstream (root complex -> RTL): every TLP the device's port receives is encoded with
  :mod:`sim.model.tlp` and driven onto the RTL's raw ``rx`` stream (64 or 128 bits), with
  optional random idle beats. Its flow-control credits are released only when the RTL has
  accepted the whole TLP, so RTL back-pressure reaches the root complex as credit exhaustion.
* upstream (RTL -> root complex): beats on the raw ``tx`` stream (with optional random
  back-pressure) are collected, decoded and sent through the port model, which times each
  TLP by its wire size at the configured link speed and width and gates it on the root
  port's flow-control credits; while a TLP waits there, ``tx`` is back-pressured.
* INTx: cocotbext-pcie's root complex cannot route Assert/Deassert_INTx messages (its root
  port raises on message TLPs), so the bridge consumes them: :attr:`intx_level` follows
  them, :attr:`intx_messages` records them and :attr:`intx_changed` fires on each. Other
  messages from the RTL are logged and dropped.

Hooks for other testbenches (the DMA engine's, for instance): :meth:`inject` drives any
``Tlp`` into the RTL (bypassing the link), :attr:`tx_handler` can replace the forwarding of
upstream TLPs (to reorder or corrupt completions, say), and :attr:`tx_observers` see every
upstream TLP as a decoded ``(hdr, payload)`` pair.

Timing: the bridge drives the streams just after a rising clock edge and samples the
handshake in the read-only phase of that cycle (what the next edge registers).
"""
from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable

import cocotb
from cocotb.queue import Queue
from cocotb.triggers import Event, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.pcie.core import Device
from cocotbext.pcie.core.tlp import CplStatus as CocoCplStatus
from cocotbext.pcie.core.tlp import Tlp, TlpAttr, TlpTc
from cocotbext.pcie.core.utils import PcieId

from hdl.pcie.spec import MsgCode, raw_tlp_beat_layout

from .layout import pack, unpack
from .model import tlp as model

__all__ = ["PcieBridge", "tlp_to_model", "model_to_tlp"]

# Under "cocotb." so that the simulator log shows it next to the root complex's messages.
log = logging.getLogger("cocotb.pcie_bridge")


def tlp_to_model(tlp: Tlp) -> tuple[dict, list[int]]:
    """A cocotbext-pcie ``Tlp`` as a decoded header dict and payload DWs."""
    ft = (int(tlp.fmt) << 5) | int(tlp.type)
    h = model.empty_header()
    h.update(fmt_type=ft, tc=int(tlp.tc), attr=int(tlp.attr), ep=int(bool(tlp.ep)),
             length=tlp.length & 0x3FF)
    kind = model.kind(ft)
    if kind in ("address", "config"):
        h.update(requester_id=int(tlp.requester_id), tag=tlp.tag & 0xFF, first_be=tlp.first_be,
                 last_be=tlp.last_be)
    if kind == "address":
        h["addr"] = tlp.address & ~3
    elif kind == "config":
        h.update(cfg_bus=tlp.completer_id.bus, cfg_device=tlp.completer_id.device,
                 cfg_function=tlp.completer_id.function, cfg_reg=(tlp.address >> 2) & 0x3FF)
    elif kind == "completion":
        h.update(completer_id=int(tlp.completer_id), status=int(tlp.status), bcm=int(tlp.bcm),
                 byte_count=tlp.byte_count & 0xFFF, lower_address=tlp.lower_address & 0x7F,
                 tag=tlp.tag & 0xFF, requester_id=int(tlp.requester_id))
    elif kind == "message":
        h.update(requester_id=int(tlp.requester_id), tag=tlp.tag & 0xFF)
    payload = model.bytes_to_dws(bytes(tlp.data)) if model.has_data(ft) else []
    return h, payload


def model_to_tlp(hdr: dict, payload: list[int]) -> Tlp:
    """The inverse of :func:`tlp_to_model` (messages keep their code only in ``hdr``)."""
    ft = hdr["fmt_type"]
    tlp = Tlp()
    tlp.fmt, tlp.type = ft >> 5, ft & 0x1F
    tlp.tc = TlpTc(hdr["tc"])
    tlp.attr = TlpAttr(hdr["attr"])
    tlp.ep = bool(hdr["ep"])
    kind = model.kind(ft)
    length = hdr["length"]
    if length == 0 and (model.has_data(ft) or kind not in ("completion", "message")):
        length = 1024
    tlp.length = length
    tlp.requester_id = PcieId.from_int(hdr["requester_id"])
    tlp.tag = hdr["tag"]
    if kind in ("address", "config"):
        tlp.first_be, tlp.last_be = hdr["first_be"], hdr["last_be"]
    if kind == "address":
        tlp.address = hdr["addr"]
    elif kind == "config":
        tlp.completer_id = PcieId(hdr["cfg_bus"], hdr["cfg_device"], hdr["cfg_function"])
        tlp.address = hdr["cfg_reg"] << 2
    elif kind == "completion":
        tlp.completer_id = PcieId.from_int(hdr["completer_id"])
        tlp.status = CocoCplStatus(hdr["status"])
        tlp.bcm = bool(hdr["bcm"])
        tlp.byte_count = hdr["byte_count"] or 4096
        tlp.lower_address = hdr["lower_address"]
    tlp.data = bytearray(model.dws_to_bytes(payload))
    return tlp


class PcieBridge(Device):
    """A cocotbext-pcie ``Device`` that hands every TLP to the RTL's raw TLP streams.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel; its ports ``{rx}__payload/valid/ready`` and ``{tx}__...`` are used.
    clock : cocotb handle
        The clock of the streams.
    width : int
        Raw TLP stream width, 64 or 128.
    link_speed : int
        Link speed index for the port model (1 = 2.5 GT/s ... 5 = 32 GT/s).
    link_width : int
        Link width in lanes.
    rx_idle : float
        Probability of an idle cycle before each beat driven into the RTL.
    tx_backpressure : float
        Probability that ``tx.ready`` is low in a cycle.
    rng : random.Random
        Source of the randomness (seeded by cocotb's ``SEED`` by default).
    rx, tx : str
        Port name prefixes on ``dut``.
    """

    def __init__(self, dut, clock, *, width: int = 64, link_speed: int = 1, link_width: int = 1,
                 rx_idle: float = 0.0, tx_backpressure: float = 0.0,
                 rng: random.Random | None = None, rx: str = "rx", tx: str = "tx"):
        super().__init__()
        self.width = width
        self.layout = raw_tlp_beat_layout(width)
        self.clock = clock
        self.rx_payload = getattr(dut, f"{rx}__payload")
        self.rx_valid = getattr(dut, f"{rx}__valid")
        self.rx_ready = getattr(dut, f"{rx}__ready")
        self.tx_payload = getattr(dut, f"{tx}__payload")
        self.tx_valid = getattr(dut, f"{tx}__valid")
        self.tx_ready = getattr(dut, f"{tx}__ready")
        self.rx_idle = rx_idle
        self.tx_backpressure = tx_backpressure
        self.rng = rng or random.Random(random.getrandbits(32))
        self.upstream_port.max_link_speed = link_speed
        self.upstream_port.max_link_width = link_width

        self.intx_level = False
        self.intx_messages: list[tuple[float, int]] = []
        self.intx_changed = Event()
        self.tx_handler: Callable[[Tlp], Awaitable[None]] = self.upstream_send
        self.tx_observers: list[Callable[[dict, list[int]], None]] = []
        self.rx_count = 0
        self.tx_count = 0

        self._rx_queue: Queue = Queue()
        self._rx_wake = Event()
        self.rx_valid.value = 0
        self.tx_ready.value = 0
        cocotb.start_soon(self._drive_rx())
        cocotb.start_soon(self._monitor_tx())

    # --- downstream ----------------------------------------------------------------------
    async def upstream_recv(self, tlp: Tlp) -> None:
        """A TLP from the root complex: queue it for the RTL (credits released when taken)."""
        hdr, payload = tlp_to_model(tlp)
        self._rx_queue.put_nowait((model.encode(hdr, payload), tlp))
        self._rx_wake.set()

    def inject(self, tlp_or_model, payload: list[int] | None = None) -> None:
        """Drive a TLP into the RTL directly: a ``Tlp``, or a header dict plus payload DWs."""
        if isinstance(tlp_or_model, Tlp):
            hdr, payload = tlp_to_model(tlp_or_model)
        else:
            hdr, payload = tlp_or_model, payload or []
        self._rx_queue.put_nowait((model.encode(hdr, payload), None))
        self._rx_wake.set()

    async def _drive_rx(self) -> None:
        # Drive right after the clock edge, sample the handshake in the read-only phase of
        # the same cycle: what is seen there is what the next edge will register.
        beats: list[dict] = []
        current = None
        tlp = None
        while True:
            await RisingEdge(self.clock)
            if current is None:
                if not beats and not self._rx_queue.empty():
                    dws, tlp = self._rx_queue.get_nowait()
                    beats = model.raw_beats(dws, self.width)
                if beats and not (self.rx_idle and self.rng.random() < self.rx_idle):
                    current = beats.pop(0)
            if current is None:
                self.rx_valid.value = 0
                if not beats and self._rx_queue.empty():
                    self._rx_wake.clear()
                    await self._rx_wake.wait()
                continue
            self.rx_payload.value = pack(self.layout, current)
            self.rx_valid.value = 1
            await ReadOnly()
            if self.rx_ready.value:
                current = None
                if not beats:
                    self.rx_count += 1
                    if tlp is not None:
                        tlp.release_fc()
                    tlp = None

    # --- upstream ------------------------------------------------------------------------
    async def _monitor_tx(self) -> None:
        beats: list[dict] = []
        complete = None
        while True:
            await RisingEdge(self.clock)
            if complete is not None:
                # Hold the RTL off while the TLP goes through the link model.
                self.tx_ready.value = 0
                await self._upstream_tlp(complete)
                complete = None
                continue
            ready = not (self.tx_backpressure and self.rng.random() < self.tx_backpressure)
            self.tx_ready.value = int(ready)
            await ReadOnly()
            if ready and not self.tx_valid.value and not beats and not self.tx_backpressure:
                # Idle with ready held high: sleep until the RTL starts a TLP.
                await RisingEdge(self.tx_valid)
                await ReadOnly()
            if not (ready and self.tx_valid.value):
                continue
            beat = unpack(self.layout, int(self.tx_payload.value))
            if beat["first"] and beats:
                log.error("TLP from the RTL cut short (new first beat after %d beats)", len(beats))
                beats = []
            beats.append(beat)
            if beat["last"]:
                complete = model.join_raw_beats(beats, self.width)
                beats = []

    async def _upstream_tlp(self, dws: list[int]) -> None:
        hdr, payload = model.decode(dws)
        self.tx_count += 1
        log.debug("TLP from the RTL: %s %s", {k: v for k, v in hdr.items() if v}, payload)
        for observer in self.tx_observers:
            observer(hdr, payload)
        if model.kind(hdr["fmt_type"]) == "message":
            self._message(hdr)
            return
        await self.tx_handler(model_to_tlp(hdr, payload))

    def _message(self, hdr: dict) -> None:
        code = hdr["msg_code"]
        if code in (MsgCode.ASSERT_INTA.value, MsgCode.DEASSERT_INTA.value):
            level = code == MsgCode.ASSERT_INTA.value
            log.info("INTx: %s_INTA from %04x", "Assert" if level else "Deassert",
                     hdr["requester_id"])
            self.intx_messages.append((get_sim_time(unit="ns"), code))
            self.intx_level = level
            self.intx_changed.set()
        else:
            log.warning("message code %#04x from the RTL dropped (not modelled)", code)
