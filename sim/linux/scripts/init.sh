#!/bin/busybox sh
# /init of the virtio-inorder guest (sim/linux/guest.py builds the initramfs around it).
# Mount the pseudo filesystems, insert the modules in /etc/modules in order, run /workload.sh
# between two marker lines on the console, power off. The host parses the markers.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
release=$(cat /etc/kernel-release)
echo "guest: $(uname -sr), $(nproc) cpu, $(grep MemTotal /proc/meminfo | tr -s ' ')"
failed=""
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$release/$m.ko" || failed="$failed $m"
done
echo "guest: modules inserted: $(cat /etc/modules | tr '\n' ' ')"
echo "==== virtio-inorder workload begin ===="
if [ -n "$failed" ]; then
    echo "CHECK FAIL insmod: could not insert$failed"
    rc=1
else
    sh /workload.sh
    rc=$?
fi
echo "==== virtio-inorder workload end rc=$rc ===="
sync
poweroff -f
