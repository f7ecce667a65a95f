"""A real Linux guest drives the device: QEMU's multi-process PCI proxy, served from Python.

``proxy`` speaks QEMU's ``x-pci-proxy-dev`` protocol to a device backend, ``guest`` builds the
Debian kernel and busybox initramfs, ``qemu`` runs the guest, ``rtl_backend`` puts the RTL
(simulated with cocotb, ``rtl_tb``) behind the proxy, ``blk_scenario`` runs and judges the
virtio-blk workload against it, ``standin`` is the small Python device of phase 1 and
``scenario`` its workload, and ``python -m sim.linux`` is the command line. See
``docs/linux-guest.md``.
"""
