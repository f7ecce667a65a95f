"""The virtio capability chain the device serves from the 7-series user configuration space,
checked against virtio 1.2 §4.1.4 and PCI Local Bus 3.0 §6.7 (capability list rules)."""
import struct

import pytest

from boards.config_space import PCIE7X_USER_CFG_START, virtio_capabilities
from boards.device import DeviceParams


def walk(blob: bytes, base: int):
    """Follow cap_next from ``base`` through ``blob`` (placed at ``base``), like a host does."""
    caps, ptr, seen = [], base, set()
    while ptr:
        assert ptr % 4 == 0 and ptr >= 0x40, f"pointer {ptr:#x} not DW aligned above the header"
        assert ptr not in seen, "capability list loops"
        seen.add(ptr)
        raw = blob[ptr - base:]
        vndr, nxt, cap_len, cfg_type, bar = raw[0], raw[1], raw[2], raw[3], raw[4]
        offset, length = struct.unpack_from("<II", raw, 8)
        caps.append((ptr, vndr, cap_len, cfg_type, bar, offset, length, raw[:cap_len]))
        ptr = nxt
    return caps


@pytest.mark.parametrize("num_queues", [1, 4])
def test_chain_layout(num_queues):
    p = DeviceParams(num_queues=num_queues)
    blob = virtio_capabilities(p)
    assert len(blob) == 0x100 - PCIE7X_USER_CFG_START     # exactly fills 0xA8..0xFF
    caps = walk(blob, PCIE7X_USER_CFG_START)
    assert [c[0] for c in caps] == [0xA8, 0xB8, 0xCC, 0xDC, 0xEC]
    assert all(c[1] == 0x09 for c in caps)                 # vendor-specific capability
    assert [c[3] for c in caps] == [1, 2, 3, 4, 5]         # common, notify, ISR, device, pci cfg
    assert [c[2] for c in caps] == [16, 20, 16, 16, 20]
    assert all(c[4] == 0 for c in caps)                    # all in BAR0
    common, notify, isr, device, pci_cfg = caps
    # Each structure's length is its 4 KiB window of BAR0 (the BAR0 map of
    # docs/architecture.md), which holds the whole structure (virtio 1.2 §4.1.4.3.1:
    # struct virtio_pci_common_cfg is 0x3C bytes; struct virtio_blk_config 0x48, §5.2.4).
    window = 0x1000
    assert (common[5], common[6]) == (p.common_cfg_offset, window) and window >= 0x3C
    assert (notify[5], notify[6]) == (p.notify_offset, window)
    assert window >= num_queues * p.notify_off_multiplier
    assert struct.unpack_from("<I", notify[7], 16)[0] == p.notify_off_multiplier
    assert (isr[5], isr[6]) == (p.isr_offset, window)
    assert (device[5], device[6]) == (p.device_cfg_offset, window) and window >= 0x48
    assert (pci_cfg[5], pci_cfg[6]) == (0, 0) and pci_cfg[7][16:20] == bytes(4)


def test_chain_must_fit_below_0x100():
    with pytest.raises(ValueError, match="past the end"):
        virtio_capabilities(DeviceParams(), base=0xC0)


def test_device_params_reject_bad_values():
    with pytest.raises(ValueError, match="power of two"):
        DeviceParams(bar0_size=0x6000)
    with pytest.raises(ValueError, match="link speed"):
        DeviceParams(link_speed=3)
    with pytest.raises(ValueError, match="max_payload_size"):
        DeviceParams(max_payload_size=300)
    with pytest.raises(ValueError, match="inside BAR0"):
        DeviceParams(msix_pba_offset=0x9000)
