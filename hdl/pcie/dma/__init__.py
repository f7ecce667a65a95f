"""The DMA requester: bus-master reads and writes of host memory (see ``docs/dma.md``)."""
from hdl.pcie.dma.dma_engine import DmaEngine
from hdl.pcie.dma.layouts import DmaStatus, FcCreditLimit

__all__ = ["DmaEngine", "DmaStatus", "FcCreditLimit"]
