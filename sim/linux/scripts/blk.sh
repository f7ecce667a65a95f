# Guest workload for the RTL virtio-blk device, run as /workload.sh.
# sim/linux/blk_scenario.py prepends the constants (IDs, disk size, serial, the raw patterns as
# base64 with their sectors) as shell variables.
# Output: "CHECK PASS|FAIL name: detail" and "INFO key: value" lines; exit status = failures.

failures=0
pass() { echo "CHECK PASS $1: $2"; }
fail() { echo "CHECK FAIL $1: $2"; failures=$((failures + 1)); }
expect() {
    if [ "$3" = "$4" ]; then pass "$1" "$2 = $3"; else fail "$1" "$2 = $3, expected $4"; fi
}
md5() { md5sum "$1" | cut -d' ' -f1; }
# Forget every cached block of the disk, so the next read comes from the device.
uncache() { sync; blockdev --flushbufs /dev/vda; echo 3 > /proc/sys/vm/drop_caches; }

# --- the PCI function and the virtio device -----------------------------------------------------
dev=""
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = "$VENDOR" ] && [ "$(cat "$d/device")" = "$DEVICE" ]; then dev=$d; fi
done
if [ -z "$dev" ]; then
    fail pci-device "no $VENDOR:$DEVICE in /sys/bus/pci/devices: $(cat /sys/bus/pci/devices/*/device | tr '\n' ' ')"
    exit 1
fi
pass pci-device "${dev##*/} is $VENDOR:$DEVICE, class $(cat "$dev/class")"
expect pci-driver "driver bound to the PCI function" "$(basename "$(readlink "$dev/driver")")" virtio-pci
set -- $(head -n 1 "$dev/resource")
echo "INFO bar0: $1 $2"
vdev=""
for v in "$dev"/virtio*; do [ -d "$v" ] && vdev=$v; done
if [ -z "$vdev" ]; then
    fail virtio-device "virtio_pci made no virtio device"
    exit 1
fi
expect virtio-device-id "virtio device ID of ${vdev##*/}" "$(cat "$vdev/device")" 0x0002
expect virtio-driver "driver of ${vdev##*/}" "$(basename "$(readlink "$vdev/driver")")" virtio_blk
features=$(cat "$vdev/features")
echo "INFO features: $features"
expect virtio-status "device status of ${vdev##*/}" "$(cat "$vdev/status" 2>/dev/null)" 0x0000000f

# --- the block device ---------------------------------------------------------------------------
if [ ! -b /dev/vda ]; then
    fail vda "no /dev/vda"
    exit 1
fi
expect vda-size "/sys/block/vda/size (512-byte sectors)" "$(cat /sys/block/vda/size)" "$SECTORS"
expect vda-serial "/sys/block/vda/serial" "$(cat /sys/block/vda/serial)" "$SERIAL"
echo "INFO queues: $(ls /sys/block/vda/mq | wc -l) blk-mq queue(s), depth $(cat /sys/block/vda/mq/0/nr_tags)"
echo "INFO max_segments: $(cat /sys/block/vda/queue/max_segments)"
echo "INFO max_segment_size: $(cat /sys/block/vda/queue/max_segment_size)"
start=$(cut -d' ' -f1 /proc/uptime)

# --- raw patterns at several offsets ------------------------------------------------------------
i=0
for p in $PATTERNS; do
    sector=${p%%:*}; rest=${p#*:}; count=${rest%%:*}; data=${rest#*:}
    echo "$data" | base64 -d > /tmp/p$i
    dd if=/tmp/p$i of=/dev/vda bs=512 seek="$sector" count="$count" conv=notrunc,fsync 2>/dev/null \
        || fail raw-write "dd to sector $sector failed"
    i=$((i + 1))
done
uncache
i=0
for p in $PATTERNS; do
    sector=${p%%:*}; rest=${p#*:}; count=${rest%%:*}
    dd if=/dev/vda of=/tmp/r$i bs=512 skip="$sector" count="$count" 2>/dev/null
    got=$(md5 /tmp/r$i)
    echo "INFO pattern: $sector $count $got"
    expect raw-pattern-$sector "md5 of $count sector(s) read back at sector $sector" "$got" "$(md5 /tmp/p$i)"
    i=$((i + 1))
done

# --- a file system ------------------------------------------------------------------------------
mkdir -p /mnt
if mke2fs -q /dev/vda > /tmp/mke2fs.log 2>&1; then
    pass mkfs "mke2fs on /dev/vda"
else
    fail mkfs "mke2fs: $(cat /tmp/mke2fs.log)"
fi
if mount -t ext2 /dev/vda /mnt; then
    pass mount "ext2 on /dev/vda mounted ($(df -k /mnt | tail -n 1 | tr -s ' ' | cut -d' ' -f2) KiB)"
    mkdir -p /mnt/dir
    for f in $FILES; do
        name=${f%%:*}; size=${f#*:}
        head -c "$size" /dev/urandom > "/mnt/$name"
        md5sum "/mnt/$name" >> /tmp/sums
    done
    sync
    umount /mnt && pass umount "unmounted after writing $(wc -l < /tmp/sums) files" \
        || fail umount "umount /mnt failed"
    uncache
    if mount -t ext2 /dev/vda /mnt; then
        if md5sum -c /tmp/sums > /tmp/check.log 2>&1; then
            pass files "$(wc -l < /tmp/sums) files read back after remount and dropped caches, md5sums match"
        else
            fail files "md5sum -c: $(grep -v ': OK' /tmp/check.log | tr '\n' ' ')"
        fi
        umount /mnt
    else
        fail remount "mount after umount failed"
    fi
else
    fail mount "mount -t ext2 /dev/vda /mnt failed"
fi

# --- the raw patterns once more, over the file system ----------------------------------------------
# Written again at the end, so that they are on the disk when the guest powers off.
i=0
for p in $PATTERNS; do
    sector=${p%%:*}; rest=${p#*:}; count=${rest%%:*}
    dd if=/tmp/p$i of=/dev/vda bs=512 seek="$sector" count="$count" conv=notrunc,fsync 2>/dev/null
    i=$((i + 1))
done
uncache
i=0
ok=0
for p in $PATTERNS; do
    sector=${p%%:*}; rest=${p#*:}; count=${rest%%:*}
    dd if=/dev/vda of=/tmp/r$i bs=512 skip="$sector" count="$count" 2>/dev/null
    echo "INFO final-pattern: $sector $count $(md5 /tmp/r$i)"
    [ "$(md5 /tmp/r$i)" = "$(md5 /tmp/p$i)" ] && ok=$((ok + 1))
    i=$((i + 1))
done
expect raw-final "patterns intact after rewriting them over the file system" "$ok" "$i"

end=$(cut -d' ' -f1 /proc/uptime)
echo "INFO io-seconds: $start $end"
while read -r line; do
    case "$line" in *virtio*) echo "INFO interrupts: $(echo "$line" | tr -s ' ')" ;; esac
done < /proc/interrupts
while read -r major minor name reads rmerged rsect rms writes wmerged wsect rest; do
    [ "$name" = vda ] && echo "INFO diskstats: reads $reads ($rsect sectors), writes $writes ($wsect sectors)"
done < /proc/diskstats
exit $failures
