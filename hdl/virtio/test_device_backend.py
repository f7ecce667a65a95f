"""The RTL test backend as a device backend: TestBackend plus a small device configuration."""
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring

from hdl.virtio.device_backend import DeviceBackendSignature
from hdl.virtio.test_backend import TestBackend

__all__ = ["TestDeviceBackend", "TEST_DEVICE_ID", "TestDeviceCfg"]

TEST_DEVICE_ID = 0x7473_6574
"""DW 0 of the test device's configuration: the bytes ``b"test"``."""


class TestDeviceCfg:
    """Byte offsets of the test device's configuration window (all 32-bit fields)."""
    __test__ = False        # not a pytest test class
    ID = 0x00           # RO: TEST_DEVICE_ID
    SCRATCH = 0x04      # RW: any value; 0 after reset
    CHANGE = 0x08       # WO: writing it copies the bytes written to VALUE and signals a
                        # configuration change (as a resize does for virtio-blk); reads 0
    VALUE = 0x0C        # RO: the last value written to CHANGE; 0 after reset
    FEATURES_LO = 0x10  # RO: negotiated feature bits 0..31, as the backend sees them
    FEATURES_HI = 0x14  # RO: negotiated feature bits 32..63


class TestDeviceBackend(wiring.Component):
    """A device backend for issue 5: :class:`~hdl.virtio.test_backend.TestBackend` (writes a
    pattern into every device-writable buffer, completes after a random latency, so out of
    order) with one DMA write channel, plus a device configuration window
    (:class:`TestDeviceCfg`) that exercises what a real device needs from the transport:
    read-only and read-write fields, a driver-visible configuration change, the negotiated
    features. Every access is acknowledged one cycle late, as a backend that needs time to
    answer would. It offers no device-type feature bits and never asks for a reset.

    Reset: ``reset`` (the device reset) resets the test backend as its contract says and
    clears SCRATCH and VALUE once ``idle``; ``rst`` the same.

    Parameters
    ----------
    seq_width, width : int
        The engine's seq width and the DMA width.
    cfg_addr_width : int
        DW address width of the device configuration window.
    **test_backend : dict
        ``slots``, ``min_latency``, ``latency_span``, ``max_chunk``, ``seed`` of the
        :class:`TestBackend`.

    Attributes
    ----------
    See :class:`~hdl.virtio.device_backend.DeviceBackendSignature` (one write channel, no
    read channel).
    """
    __test__ = False        # not a pytest test class
    read_channels = 0
    write_channels = 1
    device_features = 0

    def __init__(self, *, seq_width: int, width: int = 64, cfg_addr_width: int = 10,
                 **test_backend):
        self.backend = TestBackend(seq_width=seq_width, width=width, **test_backend)
        super().__init__(DeviceBackendSignature(
            seq_width=seq_width, width=width, cfg_addr_width=cfg_addr_width,
            read_channels=self.read_channels, write_channels=self.write_channels))

    def elaborate(self, platform):
        m = Module()
        m.submodules.backend = be = self.backend
        wiring.connect(m, wiring.flipped(self.elem), be.elem)
        wiring.connect(m, be.done, wiring.flipped(self.done))
        wiring.connect(m, be.wr, wiring.flipped(self.wr[0]))
        m.d.comb += [
            be.reset.eq(self.reset),
            self.idle.eq(be.idle),
            self.needs_reset.eq(0),
        ]

        # Device configuration: every access acknowledged in its second cycle.
        cfg = self.cfg
        scratch = Signal(32)
        value = Signal(32)
        waited = Signal()
        m.d.sync += waited.eq(cfg.valid & ~cfg.ack)
        m.d.comb += cfg.ack.eq(cfg.valid & waited)
        written = Cat(*(Mux(cfg.be[k], cfg.w_data.word_select(k, 8), 0) for k in range(4)))
        with m.Switch(cfg.addr):
            with m.Case(TestDeviceCfg.ID // 4):
                m.d.comb += cfg.r_data.eq(TEST_DEVICE_ID)
            with m.Case(TestDeviceCfg.SCRATCH // 4):
                m.d.comb += cfg.r_data.eq(scratch)
                with m.If(cfg.ack & cfg.write):
                    m.d.sync += scratch.eq(Cat(*(
                        Mux(cfg.be[k], cfg.w_data.word_select(k, 8), scratch.word_select(k, 8))
                        for k in range(4))))
            with m.Case(TestDeviceCfg.CHANGE // 4):
                with m.If(cfg.ack & cfg.write):
                    m.d.sync += value.eq(written)
                    m.d.comb += self.config_changed.eq(1)
            with m.Case(TestDeviceCfg.VALUE // 4):
                m.d.comb += cfg.r_data.eq(value)
            with m.Case(TestDeviceCfg.FEATURES_LO // 4):
                m.d.comb += cfg.r_data.eq(self.features[:32])
            with m.Case(TestDeviceCfg.FEATURES_HI // 4):
                m.d.comb += cfg.r_data.eq(self.features[32:])
        with m.If(self.reset & be.idle):
            m.d.sync += [scratch.eq(0), value.eq(0)]
        return m
