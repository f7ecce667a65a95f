"""TransportMap: the BAR0 windows and the five virtio vendor capabilities, decoded with the
spec's layouts (virtio 1.2 §4.1.4: struct virtio_pci_cap / notify_cap / cfg_cap)."""
import pytest
from amaranth.lib import data

from hdl.pcie.spec import CapId
from hdl.virtio.spec import PciCapCfgType, VirtioPciCap, VirtioPciCfgCap, VirtioPciNotifyCap
from hdl.virtio.transport_map import PCI_CFG_CAP_INDEX, PCI_CFG_FORWARD, TransportMap


def decode(layout, cap):
    raw = bytes([CapId.VENDOR, 0]) + bytes(cap.body)
    return data.Layout.cast(layout).from_bits(int.from_bytes(raw, "little"))


def test_default_map_is_architecture_md():
    tm = TransportMap()
    assert [(w.name, w.offset, w.size) for w in tm.windows()] == [
        ("common", 0x0000, 0x1000), ("isr", 0x1000, 0x1000), ("device", 0x2000, 0x1000),
        ("notify", 0x3000, 0x1000)]
    caps = tm.vendor_caps()
    want = [(PciCapCfgType.COMMON_CFG, 0x0000, 0x1000), (PciCapCfgType.NOTIFY_CFG, 0x3000, 0x1000),
            (PciCapCfgType.ISR_CFG, 0x1000, 0x1000), (PciCapCfgType.DEVICE_CFG, 0x2000, 0x1000),
            (PciCapCfgType.PCI_CFG, 0, 0)]
    for cap, (cfg_type, offset, length) in zip(caps, want):
        layout = {PciCapCfgType.NOTIFY_CFG: VirtioPciNotifyCap,
                  PciCapCfgType.PCI_CFG: VirtioPciCfgCap}.get(cfg_type, VirtioPciCap)
        v = decode(layout, cap)
        c = v.cap if layout is not VirtioPciCap else v
        assert c.cap_vndr == CapId.VENDOR
        assert c.cap_len == data.Layout.cast(layout).size // 8 == len(cap.body) + 2
        assert c.cfg_type == cfg_type and c.bar == 0 and c.id == 0
        assert (c.offset, c.length) == (offset, length)
        if cfg_type == PciCapCfgType.NOTIFY_CFG:
            assert v.notify_off_multiplier == 4
    assert caps[PCI_CFG_CAP_INDEX].forward == PCI_CFG_FORWARD == range(4, 20)
    assert all(not c.forward for i, c in enumerate(caps) if i != PCI_CFG_CAP_INDEX)
    assert tm.max_queues() == 1024


@pytest.mark.parametrize("kwargs, message", [
    (dict(window_size=0x20), "window_size"),
    (dict(notify_off_multiplier=2), "notify_off_multiplier"),
    (dict(notify_off_multiplier=12), "notify_off_multiplier"),
    (dict(isr_offset=0x0000), "overlap"),
    (dict(device_offset=0x8000), "does not fit"),
    (dict(msix_table_offset=0x1008), "inside a virtio window"),
    (dict(common_offset=0x800), "multiple"),
])
def test_bad_maps(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransportMap(**kwargs)
