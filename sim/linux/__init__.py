"""A real Linux guest drives the device: QEMU's multi-process PCI proxy, served from Python.

``proxy`` speaks QEMU's ``x-pci-proxy-dev`` protocol to a device backend, ``guest`` builds the
Debian kernel and busybox initramfs, ``qemu`` runs the guest, ``standin`` is a small Python
device used until the RTL sits behind the proxy, ``scenario`` runs and judges the stand-in
workload, and ``python -m sim.linux`` is the command line. See ``docs/linux-guest.md``.
"""
