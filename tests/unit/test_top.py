"""hdl/top.py: the device's parameter checks and what the device offers (no simulation)."""
import pytest

from hdl.blk.blk_config_space import BLK_DEVICE_FEATURES
from hdl.top import VirtioBlkDevice, VirtioBlkDeviceParams
from hdl.virtio.spec import BlkFeature, Feature, feature_mask
from hdl.virtio.virtio_pci_device import VirtioPciDeviceParams
from hdl.virtio.virtqueue_engine import VirtqueueEngine


@pytest.mark.parametrize("kwargs, message", [
    (dict(capacity=100), "multiple of disk_banks"),
    (dict(capacity=0), "capacity must be a positive integer"),
    (dict(disk_latency=(1, 2, 3)), "3 latencies for 4 banks"),
    (dict(serial=b"x" * 21), "at most 20 bytes"),
    (dict(serial="text"), "at most 20 bytes"),
    (dict(max_requests=12), "max_requests must be a power of two"),
    (dict(disk_jitter=3), "disk_jitter must be a power of two"),
    (dict(disk_init=bytes(10)), "disk_init is 10 bytes"),
])
def test_bad_parameters_are_refused_with_the_field_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VirtioBlkDeviceParams(**kwargs)


def test_pci_parameters_must_be_the_core_dataclass():
    with pytest.raises(TypeError, match="VirtioPciDeviceParams"):
        VirtioBlkDeviceParams(pci={"width": 64})
    with pytest.raises(TypeError, match="VirtioBlkDeviceParams"):
        VirtioBlkDevice(VirtioPciDeviceParams())


def test_device_offers_virtio_blk_and_the_ring_features():
    dev = VirtioBlkDevice(VirtioBlkDeviceParams(
        pci=VirtioPciDeviceParams(num_queues=3), capacity=512))
    offered = dev.offered_features
    # virtio 1.2 §6: a modern device offers VERSION_1; the ring features the engine serves.
    for bit in (Feature.VERSION_1, Feature.IN_ORDER, Feature.INDIRECT_DESC, Feature.EVENT_IDX):
        assert offered >> bit & 1, bit.name
    # §5.2.3: the fields the configuration fills in, FLUSH, and MQ for several queues.
    for bit in (BlkFeature.SIZE_MAX, BlkFeature.SEG_MAX, BlkFeature.BLK_SIZE, BlkFeature.FLUSH,
                BlkFeature.MQ):
        assert offered >> bit & 1, bit.name
    assert offered & BLK_DEVICE_FEATURES == feature_mask(
        BlkFeature.SIZE_MAX, BlkFeature.SEG_MAX, BlkFeature.BLK_SIZE, BlkFeature.FLUSH,
        BlkFeature.MQ)
    assert dev.backend.capacity == 512
    assert dev.backend.config.num_queues == 3
    assert set(dev.signature.members) >= {"rx", "tx", "credits", "function_reset",
                                          "device_status", "stats"}


@pytest.mark.parametrize("low_water", [0, 129, 2.5, True])
def test_fetch_low_water_must_fit_the_reorder_depth(low_water):
    with pytest.raises(ValueError, match="fetch low water must be an integer from 1 to the "
                                         "reorder depth 128"):
        VirtioPciDeviceParams(reorder_depth=128, fetch_low_water=low_water)
    with pytest.raises(ValueError, match="reorder depth 32"):
        VirtqueueEngine(reorder_depth=32, fetch_low_water=33)


def test_fetch_low_water_reaches_the_fetcher():
    dev = VirtioBlkDevice(VirtioBlkDeviceParams(
        pci=VirtioPciDeviceParams(reorder_depth=64, fetch_low_water=12)))
    assert dev.engine.fetch_low_water == 12
    # Unset, a queue fetches whenever it has reorder credit.
    assert VirtqueueEngine(reorder_depth=64).fetch_low_water is None
