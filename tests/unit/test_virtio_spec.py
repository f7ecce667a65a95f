"""Checks of hdl/virtio/spec.py against the virtio 1.2 specification.

The layouts are checked against the byte offsets the spec's C structures imply (computed
independently here from the C declarations), and against the struct formats the pure-Python
models use to read and write memory, so that RTL, models and drivers agree byte for byte.
"""
import itertools
import os
import random
import struct

import pytest
from amaranth.lib import data

from hdl.virtio import spec
from hdl.virtio.spec import (
    BlkConfig, BlkFeature, CommonCfg, DeviceStatus, DeviceType, Feature, IsrStatus, NotifyData,
    PciCapCfgType, VirtioBlkConfig, VirtioBlkReqHeader, VirtioBlkStatus, VirtioBlkType,
    VirtioPciCap, VirtioPciCfgCap, VirtioPciCommonCfg, VirtioPciNotifyCap, VirtqAvailHeader,
    VirtqDesc, VirtqDescFlags, VirtqUsedElem, VirtqUsedHeader, field_bytes, vring_need_event,
)
from sim.layout import pack, unpack
from sim.model.split_ring import RawDesc, decode_desc, encode_desc, encode_used_elem


def c_struct_offsets(fields):
    """Offsets of a C struct of naturally aligned little-endian fields (name, size, count)."""
    offsets, position = {}, 0
    for name, size, count in fields:
        position = (position + size - 1) // size * size
        offsets[name] = (position, size * count)
        position += size * count
    return offsets, position


# struct virtio_pci_common_cfg, virtio 1.2 §4.1.4.3, as declared there.
COMMON_CFG_C = [
    ("device_feature_select", 4, 1), ("device_feature", 4, 1), ("driver_feature_select", 4, 1),
    ("driver_feature", 4, 1), ("config_msix_vector", 2, 1), ("num_queues", 2, 1),
    ("device_status", 1, 1), ("config_generation", 1, 1), ("queue_select", 2, 1),
    ("queue_size", 2, 1), ("queue_msix_vector", 2, 1), ("queue_enable", 2, 1),
    ("queue_notify_off", 2, 1), ("queue_desc", 8, 1), ("queue_driver", 8, 1),
    ("queue_device", 8, 1), ("queue_notify_data", 2, 1), ("queue_reset", 2, 1),
]

# struct virtio_blk_config, virtio 1.2 §5.2.4 (geometry and topology flattened; both are
# made of naturally aligned members, so flattening keeps the offsets).
BLK_CONFIG_C = [
    ("capacity", 8, 1), ("size_max", 4, 1), ("seg_max", 4, 1),
    ("geometry.cylinders", 2, 1), ("geometry.heads", 1, 1), ("geometry.sectors", 1, 1),
    ("blk_size", 4, 1), ("topology.physical_block_exp", 1, 1),
    ("topology.alignment_offset", 1, 1), ("topology.min_io_size", 2, 1),
    ("topology.opt_io_size", 4, 1), ("writeback", 1, 1), ("unused0", 1, 1),
    ("num_queues", 2, 1), ("max_discard_sectors", 4, 1), ("max_discard_seg", 4, 1),
    ("discard_sector_alignment", 4, 1), ("max_write_zeroes_sectors", 4, 1),
    ("max_write_zeroes_seg", 4, 1), ("write_zeroes_may_unmap", 1, 1), ("unused1", 1, 3),
    ("max_secure_erase_sectors", 4, 1), ("max_secure_erase_seg", 4, 1),
    ("secure_erase_sector_alignment", 4, 1),
]


def test_common_cfg_layout_matches_the_c_structure():
    offsets, size = c_struct_offsets(COMMON_CFG_C)
    assert size == CommonCfg.SIZE == VirtioPciCommonCfg.size // 8 == 0x3C
    for name, (offset, width) in offsets.items():
        assert field_bytes(VirtioPciCommonCfg, name) == (offset, width), name
        constant = getattr(CommonCfg, name.upper())
        assert constant == offset, name
        assert CommonCfg.WIDTH[constant] == width, name
    assert len(CommonCfg.WIDTH) == len(COMMON_CFG_C)


def test_common_cfg_anchor_offsets():
    # A few offsets quoted by Linux's virtio_pci_modern and QEMU, as a second opinion.
    assert CommonCfg.DEVICE_STATUS == 0x14
    assert CommonCfg.QUEUE_SELECT == 0x16
    assert CommonCfg.QUEUE_DESC == 0x20
    assert CommonCfg.QUEUE_DEVICE == 0x30
    assert CommonCfg.QUEUE_RESET == 0x3A


def test_blk_config_layout_matches_the_c_structure():
    offsets, size = c_struct_offsets(BLK_CONFIG_C)
    assert size == BlkConfig.SIZE == VirtioBlkConfig.size // 8 == 0x48
    for name, (offset, width) in offsets.items():
        assert field_bytes(VirtioBlkConfig, name) == (offset, width), name
        assert getattr(BlkConfig, name.upper().replace(".", "_")) == offset, name
    assert (BlkConfig.CAPACITY, BlkConfig.SIZE_MAX, BlkConfig.SEG_MAX, BlkConfig.BLK_SIZE,
            BlkConfig.NUM_QUEUES) == (0x00, 0x08, 0x0C, 0x14, 0x22)


def test_pci_capability_layouts():
    assert VirtioPciCap.size == 16 * 8
    assert VirtioPciNotifyCap.size == VirtioPciCfgCap.size == 20 * 8
    assert field_bytes(VirtioPciCap, "cfg_type") == (3, 1)
    assert field_bytes(VirtioPciCap, "offset") == (8, 4)
    assert field_bytes(VirtioPciCap, "length") == (12, 4)
    assert field_bytes(VirtioPciNotifyCap, "notify_off_multiplier") == (16, 4)
    assert field_bytes(VirtioPciCfgCap, "pci_cfg_data") == (16, 4)
    raw = pack(VirtioPciNotifyCap, {"cap": {"cap_vndr": 0x09, "cap_next": 0x50, "cap_len": 20,
                                            "cfg_type": PciCapCfgType.NOTIFY_CFG.value,
                                            "bar": 0, "offset": 0x3000, "length": 0x1000},
                                    "notify_off_multiplier": 4})
    assert raw.to_bytes(20, "little") == struct.pack("<BBBBBBHIII", 0x09, 0x50, 20, 2, 0, 0, 0,
                                                     0x3000, 0x1000, 4)


def test_cfg_type_values():
    assert [t.value for t in PciCapCfgType] == [1, 2, 3, 4, 5, 8, 9]
    assert PciCapCfgType.COMMON_CFG.value == 1 and PciCapCfgType.PCI_CFG.value == 5


def test_split_ring_layouts_agree_with_model_struct_formats():
    rng = random.Random(1)
    for _ in range(200):
        desc = RawDesc(rng.getrandbits(64), rng.getrandbits(32), rng.getrandbits(16),
                       rng.getrandbits(16))
        as_int = pack(VirtqDesc, {"addr": desc.addr, "len": desc.len, "flags": desc.flags,
                                  "next": desc.next})
        assert as_int.to_bytes(16, "little") == encode_desc(desc)
        assert decode_desc(encode_desc(desc)) == desc
        assert unpack(VirtqDesc, as_int)["next"] == desc.next
        id_, len_ = rng.getrandbits(32), rng.getrandbits(32)
        assert pack(VirtqUsedElem, {"id": id_, "len": len_}).to_bytes(8, "little") \
            == encode_used_elem(id_, len_)
    assert VirtqAvailHeader.size == VirtqUsedHeader.size == 32
    assert field_bytes(VirtqAvailHeader, "idx") == (spec.AVAIL_IDX_OFFSET, 2)
    assert field_bytes(VirtqUsedHeader, "idx") == (spec.USED_IDX_OFFSET, 2)


def test_descriptor_and_ring_flags():
    assert (VirtqDescFlags.NEXT, VirtqDescFlags.WRITE, VirtqDescFlags.INDIRECT) == (1, 2, 4)
    assert spec.VirtqAvailFlags.NO_INTERRUPT == 1 and spec.VirtqUsedFlags.NO_NOTIFY == 1
    flags = pack(VirtqDesc, {"flags": VirtqDescFlags.NEXT | VirtqDescFlags.WRITE})
    assert (flags >> 96) & 0xFFFF == 3


def test_blk_request_header_layout():
    assert VirtioBlkReqHeader.size == 16 * 8
    raw = pack(VirtioBlkReqHeader, {"type": VirtioBlkType.OUT.value, "reserved": 7,
                                    "sector": 0x1122334455})
    assert raw.to_bytes(16, "little") == struct.pack("<IIQ", 1, 7, 0x1122334455)


def test_blk_enumerations():
    assert {t.name: t.value for t in VirtioBlkType} == {
        "IN": 0, "OUT": 1, "FLUSH": 4, "GET_ID": 8, "GET_LIFETIME": 10, "DISCARD": 11,
        "WRITE_ZEROES": 13, "SECURE_ERASE": 14}
    assert [s.value for s in VirtioBlkStatus] == [0, 1, 2]
    assert (BlkFeature.SIZE_MAX, BlkFeature.SEG_MAX, BlkFeature.GEOMETRY, BlkFeature.RO,
            BlkFeature.BLK_SIZE, BlkFeature.FLUSH, BlkFeature.TOPOLOGY, BlkFeature.CONFIG_WCE,
            BlkFeature.MQ, BlkFeature.DISCARD, BlkFeature.WRITE_ZEROES) \
        == (1, 2, 4, 5, 6, 9, 10, 11, 12, 13, 14)
    assert spec.VIRTIO_BLK_ID_BYTES == 20 and spec.VIRTIO_BLK_SECTOR_BYTES == 512


def test_feature_bits_and_helpers():
    assert (Feature.INDIRECT_DESC, Feature.EVENT_IDX, Feature.VERSION_1, Feature.ACCESS_PLATFORM,
            Feature.RING_PACKED, Feature.IN_ORDER, Feature.ORDER_PLATFORM, Feature.SR_IOV,
            Feature.NOTIFICATION_DATA) == (28, 29, 32, 33, 34, 35, 36, 37, 38)
    assert Feature.RING_INDIRECT_DESC is Feature.INDIRECT_DESC
    assert Feature.RING_EVENT_IDX is Feature.EVENT_IDX
    mask = spec.feature_mask(Feature.VERSION_1, Feature.IN_ORDER, Feature.INDIRECT_DESC,
                             BlkFeature.FLUSH)
    assert mask == (1 << 32) | (1 << 35) | (1 << 28) | (1 << 9)
    assert spec.feature_word(mask, 0) == (1 << 28) | (1 << 9)
    assert spec.feature_word(mask, 1) == 0b1001
    assert spec.feature_word(mask, 2) == 0
    assert spec.feature_names(mask | (1 << 50)) == ["FLUSH", "INDIRECT_DESC", "VERSION_1",
                                                    "IN_ORDER", "bit 50"]
    with pytest.raises(ValueError, match="outside 0..127"):
        spec.feature_mask(128)


def test_status_isr_and_ids():
    assert [int(s) for s in DeviceStatus] == [1, 2, 4, 8, 64, 128]
    assert DeviceStatus.DRIVER_OK in DeviceStatus(0x0F)
    assert IsrStatus.QUEUE == 1 and IsrStatus.DEVICE_CONFIG == 2
    assert spec.PCI_VENDOR_ID == 0x1AF4
    assert spec.pci_device_id(DeviceType.BLOCK) == 0x1042
    assert spec.pci_device_id(DeviceType.NETWORK) == 0x1041     # the spec's own example
    with pytest.raises(ValueError, match="0x1040..0x107F"):
        spec.pci_device_id(0x40)
    assert spec.VIRTIO_MSI_NO_VECTOR == 0xFFFF


def test_notify_data_and_address():
    # next_off: low 15 bits of the avail index, next_wrap: bit 15 (§2.9)
    avail_idx = 0x8123
    raw = pack(NotifyData, {"vqn": 3, "next_off": avail_idx & 0x7FFF,
                            "next_wrap": avail_idx >> 15})
    assert raw == 3 | (avail_idx << 16)
    assert spec.notify_offset(0x3000, 5, 4) == 0x3014
    assert spec.notify_offset(0x3000, 5, 0) == 0x3000


def test_queue_size_rule():
    for size in (1, 2, 4, 256, 32768):
        assert spec.check_queue_size(size) == size
    for size in (0, 3, 6, 100, 32767, 65536, -4):
        with pytest.raises(ValueError):
            spec.check_queue_size(size)
    with pytest.raises(TypeError):
        spec.check_queue_size(4.0)


def test_area_sizes_and_event_offsets():
    for n in (1, 8, 256, 32768):
        assert spec.desc_table_bytes(n) == 16 * n
        assert spec.avail_ring_bytes(n) == 6 + 2 * n
        assert spec.used_ring_bytes(n) == 6 + 8 * n
        # used_event is the last u16 of the avail ring, avail_event the last of the used ring
        assert spec.used_event_offset(n) + 2 == spec.avail_ring_bytes(n)
        assert spec.avail_event_offset(n) + 2 == spec.used_ring_bytes(n)
    assert (spec.DESC_TABLE_ALIGN, spec.AVAIL_RING_ALIGN, spec.USED_RING_ALIGN) == (16, 2, 4)


def need_event_by_enumeration(event, new, old):
    """The prose of §2.7.7.2: notify iff one of the indices old .. new-1 was used_event.
    Short moves are enumerated index by index; long ones (where enumerating would be slow)
    ask whether event lies within ``count`` steps after old."""
    count = (new - old) & 0xFFFF
    if count <= 64:
        return any((old + k) & 0xFFFF == event for k in range(count))
    return (event - old) % 65536 < count


def test_vring_need_event_edge_cases():
    assert vring_need_event(0, 1, 0)                # first buffer with used_event 0
    assert not vring_need_event(1, 1, 0)            # event not reached yet
    assert vring_need_event(1, 2, 0)                # batch passing the event
    assert not vring_need_event(5, 5, 5)            # no movement never notifies
    assert vring_need_event(0xFFFF, 0, 0xFFFF)      # wrap: index 65535 written
    assert vring_need_event(0xFFFF, 3, 0xFFFE)      # batch straddling the wrap
    assert vring_need_event(0, 3, 0xFFFE)
    assert not vring_need_event(3, 3, 0xFFFE)
    assert not vring_need_event(0xFFFD, 3, 0xFFFE)  # event just behind old
    assert vring_need_event(0x1234, 0x1235 + 0x7FFF, 0x1235 - 1)
    # A jump of 65535 covers every index but new - 1 + 1 == new.
    assert vring_need_event(7, 6, 7) and not vring_need_event(6, 6, 7)


def test_vring_need_event_matches_the_prose():
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    print(f"SEED={seed}")
    rng = random.Random(seed)
    special = [0, 1, 2, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
    for event, new, old in itertools.product(special, repeat=3):
        assert vring_need_event(event, new, old) == need_event_by_enumeration(event, new, old)
    for _ in range(3000):
        old = rng.getrandbits(16)
        new = (old + rng.choice([0, 1, 2, rng.randrange(1 << 16)])) & 0xFFFF
        event = (old + rng.randrange(-3, 40)) & 0xFFFF if rng.random() < 0.7 \
            else rng.getrandbits(16)
        assert vring_need_event(event, new, old) == need_event_by_enumeration(event, new, old), \
            (event, new, old)


def test_layouts_are_usable_in_hardware():
    # The enumerations carry shapes, so the layouts build and fields read as expected.
    view = data.Const(VirtqDesc, pack(VirtqDesc, {"flags": 5, "next": 9}))
    assert view.next == 9
    assert data.Layout.cast(VirtioBlkReqHeader)["type"].width == 32
    assert data.Layout.cast(VirtioPciCommonCfg)["device_status"].width == 8
