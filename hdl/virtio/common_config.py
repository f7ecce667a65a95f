"""The virtio-pci common configuration structure as a register client (virtio 1.2 §4.1.4.3)."""
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hdl.pcie.register_bus import RegisterBus
from hdl.virtio.spec import (DeviceStatus, Feature, MAX_QUEUE_SIZE, MAX_MSIX_VECTOR,
                             VIRTIO_MSI_NO_VECTOR)
from hdl.virtio.virtqueue_port import VirtqConfig, VirtqFeatures

__all__ = ["CommonConfig", "CommonConfigEvents"]

# DW indices of the fields (CommonCfg byte offsets >> 2).
_DEVICE_FEATURE_SELECT = 0x00 >> 2
_DEVICE_FEATURE = 0x04 >> 2
_DRIVER_FEATURE_SELECT = 0x08 >> 2
_DRIVER_FEATURE = 0x0C >> 2
_MSIX_NUMQ = 0x10 >> 2          # config_msix_vector | num_queues << 16
_STATUS_GEN_SEL = 0x14 >> 2     # device_status | config_generation << 8 | queue_select << 16
_SIZE_VECTOR = 0x18 >> 2        # queue_size | queue_msix_vector << 16
_ENABLE_NOTIFY = 0x1C >> 2      # queue_enable | queue_notify_off << 16
_DESC = 0x20 >> 2
_DRIVER = 0x28 >> 2
_DEVICE = 0x30 >> 2
# 0x38: queue_notify_data | queue_reset << 16 read 0 (NOTIF_CONFIG_DATA and RING_RESET are
# not offered, §4.1.4.3); everything above 0x3C reads 0.

# Status bits a driver may set; DEVICE_NEEDS_RESET belongs to the device (§2.1).
_DRIVER_BITS = int(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FAILED)

CommonConfigEvents = data.StructLayout({
    "features_refused": 1,  # a FEATURES_OK write was refused (the bit stays clear)
    "write_ignored": 1,     # a write to a read-write field had no effect (see the class doc)
})
"""One-cycle pulses, for the transport's counters."""


class CommonConfig(wiring.Component):
    """Serves ``struct virtio_pci_common_cfg`` (virtio 1.2 §4.1.4.3) and owns device status.

    Register behaviour (offsets in the structure; unlisted bytes read 0, writes ignored):

    * ``device_feature_select`` (00h) RW; ``device_feature`` (04h) RO: 32 bits of
      ``device_features`` from bit ``32 * select`` (0 for select >= 2).
    * ``driver_feature_select`` (08h) RW; ``driver_feature`` (0Ch) RW: the driver's bits are
      stored as written (a write with select >= 2 is remembered only as "some bit above 63
      was set"); once FEATURES_OK is set, writes are ignored, so the negotiated set cannot
      change behind the device's back (§3.1.1 forbids it to the driver anyway).
    * ``config_msix_vector`` (10h), ``queue_msix_vector`` (1Ah) RW: a vector number below
      ``msix_vectors`` or NO_VECTOR (FFFFh) is stored; anything else is a mapping the device
      cannot satisfy and reads back NO_VECTOR (§4.1.5.1.2). NO_VECTOR after reset.
    * ``num_queues`` (12h) RO.
    * ``device_status`` (14h): writing 0 resets the device (below). Other writes add the
      driver's bits (the driver never clears a bit, §2.1.1; a write that omits one does not
      clear it): ACKNOWLEDGE, DRIVER, FAILED as written; FEATURES_OK only if the driver's
      features are a set the device accepts: VERSION_1 set (§6.1), no bit that is not in
      ``device_features``; otherwise FEATURES_OK stays clear (§2.2.1) and the refusal is
      counted. DRIVER_OK only once FEATURES_OK is set (a device that has not accepted
      features does not run). DEVICE_NEEDS_RESET is set by the device when ``needs_reset``
      rises (§2.1.2), with a configuration change notification if DRIVER_OK is set; the
      driver cannot write it.
    * ``config_generation`` (15h) RO: incremented on each ``config_changed`` (§4.1.4.3.1).
    * ``queue_select`` (16h) RW. For a value >= ``num_queues`` every queue field reads 0
      (queue_size 0: "unavailable", §4.1.4.3.1) and ignores writes.
    * ``queue_size`` (18h) RW while the queue is disabled: ``max_queue_size`` after reset;
      the driver may write a smaller power of two (§2.7: a split queue's size is a power of
      two). A write of anything else (0, not a power of two, above the maximum) is refused:
      the register keeps its value, so reading it back tells the driver.
    * ``queue_enable`` (1Ch): writing a value with bit 0 set enables the queue; 0 after
      reset. Writing 0 is refused (§4.1.4.3.2: the driver MUST NOT, without RING_RESET).
    * ``queue_notify_off`` (1Eh) RO: the queue index (doorbell at index *
      ``notify_off_multiplier``).
    * ``queue_desc`` (20h), ``queue_driver`` (28h), ``queue_device`` (30h) RW while the
      queue is disabled, in 32-bit halves; with ``queue_size`` read-only once the queue is
      enabled (the driver configures them before enabling, §4.1.4.3.2).

    Every refused write to a read-write field is counted (``events.write_ignored``).

    **Device reset** (``device_status`` written 0, §4.1.4.3.1, §2.4). ``engine_reset`` and
    ``backend_reset`` rise and stay high until ``idle``: the engine has drained or aborted
    its DMA and flushed its reorder buffers, and the backend has nothing outstanding.
    Meanwhile ``device_status`` keeps reading its old value and writes to this structure
    wait (the bus is not acknowledged); reads are served throughout. Then every register
    returns to its reset value, ``device_reset`` pulses for the other transport blocks, and
    ``device_status`` reads 0: a driver polling it (Linux does) sees 0 only when the reset
    is done. When the device was not running (no DRIVER_OK) the engine is already held
    idle and the reset takes two cycles.

    ``rst`` returns everything to the same reset values, ``config_generation`` to 0.

    Parameters
    ----------
    num_queues : int
        Queues of the device (``num_queues``), at least 1.
    max_queue_size : int
        Largest queue size, a power of two up to 32768; ``queue_size`` after reset.
    msix_vectors : int
        MSI-X Table Size (0: no MSI-X, every vector write maps to NO_VECTOR).
    device_features : int
        The 64 feature bits offered (``device_feature``); must include VERSION_1.
    addr_width : int
        Width of the window's DW address (10 for a 4 KiB window).

    Attributes
    ----------
    bus : In(RegisterBus.Signature(addr_width))
    queue_config : Out(ArrayLayout(VirtqConfig, num_queues))
        Per queue size, enable and area addresses; stable while the queue is enabled.
    queue_vector : Out(ArrayLayout(16, num_queues))
        ``queue_msix_vector`` of each queue.
    config_vector : Out(16)
        ``config_msix_vector``.
    features : Out(VirtqFeatures)
        IN_ORDER, EVENT_IDX, INDIRECT_DESC as negotiated (0 until FEATURES_OK is set).
    driver_features : Out(64)
        All negotiated bits (0 until FEATURES_OK is set), for the backend.
    driver_ok : Out(1)
        DRIVER_OK is set and no reset is in progress.
    status : Out(8)
        ``device_status`` as read.
    engine_reset : Out(1)
        Hold the engine in reset: while DRIVER_OK is clear (so the negotiated features only
        change while it is reset), and during a device reset until ``idle``.
    backend_reset : Out(1)
        Hold the backend in reset: during a device reset until ``idle``.
    idle : In(1)
        The engine and the backend are both idle under their resets.
    needs_reset : In(1)
        The engine or the backend needs a reset (level, cleared by the reset).
    config_changed : In(1)
        The backend changed its device configuration (pulse).
    config_event : Out(1)
        Send a configuration change notification (pulse): DEVICE_NEEDS_RESET was set, or
        ``config_changed``, while DRIVER_OK is set (a driver that is not running is not
        notified; ``config_generation`` and the status tell it).
    device_reset : Out(1)
        Pulse in the cycle the registers return to their reset values.
    events : Out(CommonConfigEvents)
    """

    def __init__(self, *, num_queues: int, max_queue_size: int = MAX_QUEUE_SIZE,
                 msix_vectors: int = 0, device_features: int, addr_width: int = 10):
        if not isinstance(num_queues, int) or num_queues < 1:
            raise ValueError(f"num_queues must be a positive integer, not {num_queues!r}")
        if (not isinstance(max_queue_size, int) or not 1 <= max_queue_size <= MAX_QUEUE_SIZE
                or max_queue_size & (max_queue_size - 1)):
            raise ValueError(f"max_queue_size must be a power of two from 1 to "
                             f"{MAX_QUEUE_SIZE} (virtio 1.2 §2.7), not {max_queue_size!r}")
        if not isinstance(msix_vectors, int) or not 0 <= msix_vectors <= MAX_MSIX_VECTOR + 1:
            raise ValueError(f"msix_vectors must be 0 to {MAX_MSIX_VECTOR + 1}, not "
                             f"{msix_vectors!r}")
        if not isinstance(device_features, int) or not 0 <= device_features < 1 << 64:
            raise ValueError(f"device_features must be a 64-bit mask, not {device_features!r}")
        if not device_features >> Feature.VERSION_1 & 1:
            raise ValueError("device_features must offer VERSION_1 (virtio 1.2 §6.2: a device "
                             "MUST offer it)")
        if not isinstance(addr_width, int) or addr_width < 4:
            raise ValueError(f"addr_width must be at least 4 (the structure is 60 bytes), not "
                             f"{addr_width!r}")
        self.num_queues = num_queues
        self.max_queue_size = max_queue_size
        self.msix_vectors = msix_vectors
        self.device_features = device_features
        super().__init__({
            "bus": In(RegisterBus.Signature(addr_width=addr_width)),
            "queue_config": Out(data.ArrayLayout(VirtqConfig, num_queues)),
            "queue_vector": Out(data.ArrayLayout(unsigned(16), num_queues)),
            "config_vector": Out(16, init=VIRTIO_MSI_NO_VECTOR),
            "features": Out(VirtqFeatures),
            "driver_features": Out(64),
            "driver_ok": Out(1),
            "status": Out(8),
            "engine_reset": Out(1),
            "backend_reset": Out(1),
            "idle": In(1),
            "needs_reset": In(1),
            "config_changed": In(1),
            "config_event": Out(1),
            "device_reset": Out(1),
            "events": Out(CommonConfigEvents),
        })

    def elaborate(self, platform):
        m = Module()
        nq = self.num_queues
        bus = self.bus
        be = bus.be
        wd = bus.w_data

        # --- registers ----------------------------------------------------------------------
        dev_sel = Signal(32)
        drv_sel = Signal(32)
        drv_feat = Signal(64)
        drv_high = Signal()             # a bit above 63 was written
        config_vector = Signal(16, init=VIRTIO_MSI_NO_VECTOR)
        status = Signal(8)
        generation = Signal(8)
        q_sel = Signal(16)
        resetting = Signal()
        size = [Signal(16, name=f"q{q}_size", init=self.max_queue_size) for q in range(nq)]
        vector = [Signal(16, name=f"q{q}_vector", init=VIRTIO_MSI_NO_VECTOR) for q in range(nq)]
        enable = [Signal(name=f"q{q}_enable") for q in range(nq)]
        desc = [Signal(64, name=f"q{q}_desc") for q in range(nq)]
        driver = [Signal(64, name=f"q{q}_driver") for q in range(nq)]
        device = [Signal(64, name=f"q{q}_device") for q in range(nq)]

        features_ok = status[3]         # DeviceStatus.FEATURES_OK
        driver_ok = status[2]           # DeviceStatus.DRIVER_OK
        needs_reset_bit = status[6]     # DeviceStatus.DEVICE_NEEDS_RESET
        negotiated = Mux(features_ok, drv_feat, 0)

        m.d.comb += [
            self.config_vector.eq(config_vector),
            self.status.eq(status),
            self.driver_features.eq(negotiated),
            self.features.in_order.eq(negotiated[Feature.IN_ORDER]),
            self.features.event_idx.eq(negotiated[Feature.EVENT_IDX]),
            self.features.indirect_desc.eq(negotiated[Feature.INDIRECT_DESC]),
            self.driver_ok.eq(driver_ok & ~resetting),
            self.engine_reset.eq(resetting | ~driver_ok),
            self.backend_reset.eq(resetting),
        ]
        for q in range(nq):
            cfg = self.queue_config[q]
            m.d.comb += [
                cfg.size.eq(size[q]),
                cfg.enable.eq(enable[q]),
                cfg.desc.eq(desc[q]),
                cfg.driver.eq(driver[q]),
                cfg.device.eq(device[q]),
                self.queue_vector[q].eq(vector[q]),
            ]

        # --- the selected queue -------------------------------------------------------------
        sel_ok = q_sel < nq
        sel = Mux(sel_ok, q_sel, 0)[:max(1, (nq - 1).bit_length())]
        s_size = Mux(sel_ok, Array(size)[sel], 0)
        s_vector = Mux(sel_ok, Array(vector)[sel], 0)
        s_enable = Mux(sel_ok, Array(enable)[sel], 0)
        s_notify_off = Mux(sel_ok, q_sel, 0)
        s_desc = Mux(sel_ok, Array(desc)[sel], 0)
        s_driver = Mux(sel_ok, Array(driver)[sel], 0)
        s_device = Mux(sel_ok, Array(device)[sel], 0)

        # --- reads ----------------------------------------------------------------------------
        dev_feat = Signal(32)
        with m.Switch(dev_sel):
            for k in range(2):
                with m.Case(k):
                    m.d.comb += dev_feat.eq((self.device_features >> (32 * k)) & 0xFFFF_FFFF)
        drv_word = Signal(32)
        with m.Switch(drv_sel):
            with m.Case(0):
                m.d.comb += drv_word.eq(drv_feat[:32])
            with m.Case(1):
                m.d.comb += drv_word.eq(drv_feat[32:])
        with m.Switch(bus.addr):
            with m.Case(_DEVICE_FEATURE_SELECT):
                m.d.comb += bus.r_data.eq(dev_sel)
            with m.Case(_DEVICE_FEATURE):
                m.d.comb += bus.r_data.eq(dev_feat)
            with m.Case(_DRIVER_FEATURE_SELECT):
                m.d.comb += bus.r_data.eq(drv_sel)
            with m.Case(_DRIVER_FEATURE):
                m.d.comb += bus.r_data.eq(drv_word)
            with m.Case(_MSIX_NUMQ):
                m.d.comb += bus.r_data.eq(Cat(config_vector, Const(nq, 16)))
            with m.Case(_STATUS_GEN_SEL):
                m.d.comb += bus.r_data.eq(Cat(status, generation, q_sel))
            with m.Case(_SIZE_VECTOR):
                m.d.comb += bus.r_data.eq(Cat(s_size, s_vector))
            with m.Case(_ENABLE_NOTIFY):
                m.d.comb += bus.r_data.eq(Cat(s_enable, Const(0, 15), s_notify_off))
            for base, reg in ((_DESC, s_desc), (_DRIVER, s_driver), (_DEVICE, s_device)):
                with m.Case(base):
                    m.d.comb += bus.r_data.eq(reg[:32])
                with m.Case(base + 1):
                    m.d.comb += bus.r_data.eq(reg[32:])

        # --- writes ---------------------------------------------------------------------------
        # A read is answered at once, a write a clock later: its first clock merges the
        # written bytes over what the DW reads (the read multiplexer) into ``merged``, its
        # second applies ``merged`` (the checks of the new value and the register enables).
        # While a reset drains the device, writes are dropped (and counted): the driver must
        # not write before device_status reads 0 (§4.1.4.3.2), and holding the bus instead
        # would stall the function's receive path, completions for the draining DMA
        # included, until the completion timeout.
        second = Signal()               # the write's second clock
        with m.If(bus.valid & bus.write):
            m.d.sync += second.eq(~second)
        m.d.comb += bus.ack.eq(bus.valid & (~bus.write | second))
        write = Signal()
        m.d.comb += write.eq(bus.valid & bus.write & second & ~resetting)
        ignored = Signal()
        refused = Signal()
        start_reset = Signal()

        def map_vector(value):
            ok = (value == VIRTIO_MSI_NO_VECTOR) | (value < self.msix_vectors)
            return Mux(ok, value, VIRTIO_MSI_NO_VECTOR)

        # The addressed DW with the written bytes over what it reads: every field takes its
        # new value from here (one byte merge for the whole structure).
        merged = Signal(32)
        m.d.sync += merged.eq(Cat(*(Mux(be[k], wd.word_select(k, 8), bus.r_data.word_select(k, 8))
                                    for k in range(4))))

        def queue_write(update, guarded=True):
            """Apply the statements ``update(q)`` to the selected queue; refused for a
            missing queue or, when ``guarded``, an enabled one."""
            with m.If(~sel_ok | (s_enable if guarded else 0)):
                m.d.comb += ignored.eq(1)
            with m.Else():
                for q in range(nq):
                    with m.If(q_sel == q):
                        m.d.sync += update(q)

        with m.If(write):
            with m.Switch(bus.addr):
                with m.Case(_DEVICE_FEATURE_SELECT):
                    m.d.sync += dev_sel.eq(merged)
                with m.Case(_DRIVER_FEATURE_SELECT):
                    m.d.sync += drv_sel.eq(merged)
                with m.Case(_DRIVER_FEATURE):
                    with m.If(features_ok):
                        m.d.comb += ignored.eq(1)
                    with m.Elif(drv_sel == 0):
                        m.d.sync += drv_feat[:32].eq(merged)
                    with m.Elif(drv_sel == 1):
                        m.d.sync += drv_feat[32:].eq(merged)
                    with m.Elif(merged != 0):       # reads 0, so: a bit above 63 written
                        m.d.sync += drv_high.eq(1)
                with m.Case(_MSIX_NUMQ):
                    with m.If(be[0:2].any()):
                        m.d.sync += config_vector.eq(map_vector(merged[:16]))
                with m.Case(_STATUS_GEN_SEL):
                    with m.If(be[2:4].any()):
                        m.d.sync += q_sel.eq(merged[16:])
                    with m.If(be[0]):
                        value = wd[:8]
                        with m.If(value == 0):
                            m.d.comb += start_reset.eq(1)
                        with m.Else():
                            accept = ((drv_feat[Feature.VERSION_1])
                                      & ((drv_feat & ~self.device_features) == 0) & ~drv_high)
                            want_fok = value[3] & ~features_ok
                            fok = features_ok | (want_fok & accept)
                            m.d.comb += refused.eq(want_fok & ~accept)
                            with m.If(value[2] & ~fok):
                                m.d.comb += ignored.eq(1)
                            m.d.sync += status.eq(status | (value & _DRIVER_BITS)
                                                  | Cat(Const(0, 2), value[2] & fok, fok))
                with m.Case(_SIZE_VECTOR):
                    with m.If(be[0:2].any()):
                        new_size = merged[:16]
                        valid_size = ((new_size != 0) & ((new_size & (new_size - 1)) == 0)
                                      & (new_size <= self.max_queue_size))
                        with m.If(~valid_size):
                            m.d.comb += ignored.eq(1)
                        with m.Else():
                            queue_write(lambda q: size[q].eq(new_size))
                    with m.If(be[2:4].any()):
                        new_vector = map_vector(merged[16:])
                        queue_write(lambda q: vector[q].eq(new_vector), guarded=False)
                with m.Case(_ENABLE_NOTIFY):
                    with m.If(be[0:2].any()):
                        with m.If(~(be[0] & wd[0])):
                            m.d.comb += ignored.eq(1)
                        with m.Else():
                            queue_write(lambda q: enable[q].eq(1), guarded=False)
                for base, regs in ((_DESC, desc), (_DRIVER, driver), (_DEVICE, device)):
                    for half in range(2):
                        with m.Case(base + half):
                            queue_write(lambda q, regs=regs, half=half:
                                        regs[q].word_select(half, 32).eq(merged))

        # --- DEVICE_NEEDS_RESET and configuration changes -----------------------------------
        raise_needs_reset = self.needs_reset & ~needs_reset_bit & ~resetting
        with m.If(raise_needs_reset):
            m.d.sync += status[6].eq(1)
        with m.If(self.config_changed):
            m.d.sync += generation.eq(generation + 1)
        # Configuration changes are notified only to a driver that is running (DRIVER_OK);
        # config_generation tells any other driver that something changed.
        m.d.comb += self.config_event.eq((raise_needs_reset | self.config_changed)
                                         & driver_ok & ~resetting)

        # --- device reset ---------------------------------------------------------------------
        clear = Signal()
        with m.If(start_reset):
            m.d.sync += resetting.eq(1)
        with m.If(resetting & self.idle):
            m.d.comb += clear.eq(1)
            m.d.sync += resetting.eq(0)
        with m.If(clear):
            m.d.sync += [
                dev_sel.eq(0), drv_sel.eq(0), drv_feat.eq(0), drv_high.eq(0),
                config_vector.eq(VIRTIO_MSI_NO_VECTOR), status.eq(0), q_sel.eq(0),
            ]
            for q in range(nq):
                m.d.sync += [
                    size[q].eq(self.max_queue_size), vector[q].eq(VIRTIO_MSI_NO_VECTOR),
                    enable[q].eq(0), desc[q].eq(0), driver[q].eq(0), device[q].eq(0),
                ]
        m.d.comb += [
            self.device_reset.eq(clear),
            self.events.features_refused.eq(refused),
            self.events.write_ignored.eq(ignored | (bus.valid & bus.write & second & resetting)),
        ]
        return m
