# Guest workload for the stand-in device (sim/linux/standin.py), run as /workload.sh.
# sim/linux/scenario.py prepends the constants (IDs, register offsets, the DMA buffer) as shell
# variables, so the guest and the device model share one definition.
# Output: "CHECK PASS|FAIL name: detail" and "INFO key: value" lines; exit status = failures.

failures=0
pass() { echo "CHECK PASS $1: $2"; }
fail() { echo "CHECK FAIL $1: $2"; failures=$((failures + 1)); }
hex() { printf '0x%x' "$1"; }
# expect NAME WHAT ACTUAL EXPECTED: numeric comparison of two shell expressions.
expect() {
    if [ "$(($3))" = "$(($4))" ]; then pass "$1" "$2 = $3"; else fail "$1" "$2 = $3, expected $(hex $(($4)))"; fi
}
# truth NAME DETAIL COMMAND...: pass when the command succeeds.
truth() {
    name=$1; detail=$2; shift 2
    if "$@"; then pass "$name" "$detail"; else fail "$name" "not true: $detail"; fi
}

# --- find the device ---------------------------------------------------------------------------
dev=""
for d in /sys/bus/pci/devices/*; do
    if [ "$(cat "$d/vendor")" = "$VENDOR" ] && [ "$(cat "$d/device")" = "$DEVICE" ]; then dev=$d; fi
done
if [ -z "$dev" ]; then
    fail device "no $VENDOR:$DEVICE in /sys/bus/pci/devices: $(cat /sys/bus/pci/devices/*/device | tr '\n' ' ')"
    exit 1
fi
pass device "${dev##*/} is $VENDOR:$DEVICE"
expect class "class" "$(cat "$dev/class")" "$CLASS"
expect revision "revision" "$(cat "$dev/revision")" "$REVISION"
expect subsystem "subsystem vendor" "$(cat "$dev/subsystem_vendor")" "$VENDOR"
expect subsystem-id "subsystem" "$(cat "$dev/subsystem_device")" "$SUBSYSTEM"
truth no-driver "no driver bound (virtio_pci declines device IDs outside 0x1000..0x107f)" \
    test ! -e "$dev/driver"

# Configuration space through sysfs: cfg OFFSET BYTES reads a little-endian value,
# cfgw OFFSET BYTES VALUE writes one (OFFSET aligned to BYTES, so it is one access).
cfg() {
    value=0; shift_=0
    for b in $(od -An -tu1 -j "$1" -N "$2" "$dev/config"); do
        value=$((value | b << shift_)); shift_=$((shift_ + 8))
    done
    echo $value
}
cfgw() {
    i=0; bytes=""
    while [ $i -lt "$2" ]; do
        bytes="$bytes\\$(printf %03o $((($3 >> (8 * i)) & 255)))"; i=$((i + 1))
    done
    printf "$bytes" | dd of="$dev/config" bs="$2" seek=$(($1 / $2)) count=1 conv=notrunc 2>/dev/null
}
expect config-ids "vendor/device dword at 0x00" "$(hex $(cfg 0 4))" "$DEVICE << 16 | $VENDOR"
expect interrupt-pin "Interrupt Pin" "$(cfg 0x3d 1)" 1

# --- BAR0 --------------------------------------------------------------------------------------
set -- $(head -n 1 "$dev/resource")
bar0=$(($1)); bar0_flags=$(($3))
echo "INFO bar0: $(hex $bar0)"
expect bar0-size "BAR0 size" $(($2 - $1 + 1)) "$BAR0_SIZE"
truth bar0-type "BAR0 is 32-bit non-prefetchable memory (flags $3)" \
    test $((bar0_flags & 0x200)) -ne 0 -a $((bar0_flags & 0x102000)) -eq 0
expect bar0-register "BAR0 register" "$(hex $(cfg 0x10 4))" "$bar0"
truth other-bars "BAR1..5 and the ROM are empty" \
    test "$(sed -n '2,7p' "$dev/resource" | grep -cv '^0x0*0 0x0*0 0x0*0$')" -eq 0
expect memory-decode "Memory Space Enable (set by the firmware)" $(($(cfg 4 2) & 2)) 2

rd() { devmem $((bar0 + $1)) "${2:-32}"; }
wr() { devmem $((bar0 + $1)) "$2" "$3"; }
rand32() { echo $(($(od -An -tu4 -N4 /dev/urandom))); }

expect magic "MAGIC" "$(rd "$REG_MAGIC")" "$MAGIC"
expect version "VERSION" "$(rd "$REG_VERSION")" "$VERSION"
wr "$REG_MAGIC" 32 0
expect read-only "MAGIC after writing 0" "$(rd "$REG_MAGIC")" "$MAGIC"
v=$(rand32)
wr "$REG_SCRATCH" 32 "$v"
expect scratch32 "SCRATCH after writing $(hex "$v")" "$(rd "$REG_SCRATCH")" "$v"
wr $((REG_SCRATCH + 1)) 8 0xa5
expect scratch-byte "SCRATCH after writing 0xa5 to byte 1" "$(rd "$REG_SCRATCH")" "($v & ~0xff00) | 0xa500"
expect scratch-half "16-bit read of SCRATCH+2" "$(rd $((REG_SCRATCH + 2)) 16)" "($v >> 16) & 0xffff"
v64=0x$(od -An -tx8 -N8 /dev/urandom | tr -d ' ')
wr "$REG_SCRATCH64" 64 "$v64"
expect scratch64 "SCRATCH64 after writing $v64" "$(rd "$REG_SCRATCH64" 64)" "$v64"
expect scratch64-high "32-bit read of SCRATCH64+4" "$(rd $((REG_SCRATCH64 + 4)))" "($v64 >> 32) & 0xffffffff"

# --- DMA between two halves of the reserved buffer (memmap= on the kernel command line) ---------
half=$((BUF_SIZE / 2)); pages=$((half / 4096))
src=$BUF_BASE; dst=$((BUF_BASE + half))
zero_dst() { dd if=/dev/zero of=/dev/mem bs=4096 seek=$((dst / 4096)) count=$pages conv=notrunc 2>/dev/null; }
read_dst() { dd if=/dev/mem of=/tmp/dst bs=4096 skip=$((dst / 4096)) count=$pages 2>/dev/null; }
dd if=/dev/urandom of=/tmp/src bs=4096 count=$pages 2>/dev/null
dd if=/tmp/src of=/dev/mem bs=4096 seek=$((src / 4096)) conv=notrunc 2>/dev/null
dd if=/dev/mem of=/tmp/check bs=4096 skip=$((src / 4096)) count=$pages 2>/dev/null
truth guest-memory "the guest reads back the $half random bytes it wrote at $(hex $src) through /dev/mem" \
    cmp -s /tmp/src /tmp/check
zero_dst

# dma SRC DST LEN: program and start a copy (addresses as two 32-bit halves), print DMA_CTRL.
dma() {
    wr "$REG_DMA_SRC" 32 $(($1 & 0xffffffff)); wr $((REG_DMA_SRC + 4)) 32 $(($1 >> 32))
    wr "$REG_DMA_DST" 64 "$2"
    wr "$REG_DMA_LEN" 32 "$3"
    wr "$REG_DMA_CTRL" 32 "$CTRL_START"
    rd "$REG_DMA_CTRL"
}
# copied NAME SRC_OFF DST_OFF LEN: the destination half holds exactly the copied bytes.
copied() {
    read_dst
    { head -c "$3" /dev/zero; tail -c +$(($2 + 1)) /tmp/src | head -c "$4"
      head -c $((half - $3 - $4)) /dev/zero; } > /tmp/expect
    truth "$1" "$4 bytes from $(hex $((src + $2))) landed at $(hex $((dst + $3))), nothing else changed" \
        cmp -s /tmp/dst /tmp/expect
    echo "INFO dma: $(hex $((src + $2))) $(hex $((dst + $3))) $4 $(tail -c +$(($2 + 1)) /tmp/src | head -c "$4" | sha256sum | cut -d' ' -f1)"
}
copies=0

command=$(cfg 4 2)
expect bus-master-off "Bus Master Enable before the guest sets it" $((command & 4)) 0
expect dma-needs-bus-master "DMA_CTRL after a copy without bus mastering" "$(dma $src $dst 4096)" "$CTRL_DONE | $CTRL_ERROR"
read_dst
head -c $half /dev/zero > /tmp/zeros
truth dma-needs-bus-master-nothing-written "the destination is untouched" cmp -s /tmp/dst /tmp/zeros
cfgw 4 2 $((command | 4))
expect bus-master "Bus Master Enable after a sysfs config write" $(($(cfg 4 2) & 4)) 4

expect dma-page "DMA_CTRL after a 4096-byte copy" "$(dma $src $dst 4096)" "$CTRL_DONE"
copied dma-page-data 0 0 4096; copies=$((copies + 1))
zero_dst
expect dma-unaligned "DMA_CTRL after a 9000-byte copy between odd addresses" "$(dma $((src + 3)) $((dst + 4101)) 9000)" "$CTRL_DONE"
copied dma-unaligned-data 3 4101 9000; copies=$((copies + 1))
zero_dst
expect dma-half "DMA_CTRL after a $half-byte copy" "$(dma $src $dst $half)" "$CTRL_DONE"
copied dma-half-data 0 0 $half; copies=$((copies + 1))

expect dma-zero-length "DMA_CTRL after a 0-byte copy" "$(dma $src $dst 0)" "$CTRL_DONE | $CTRL_ERROR"
expect dma-too-long "DMA_CTRL after a copy of DMA_MAX_LEN + 1 bytes" "$(dma $src $dst $((DMA_MAX_LEN + 1)))" "$CTRL_DONE | $CTRL_ERROR"
expect dma-not-ram "DMA_CTRL after a copy from $(hex "$NOT_RAM") (no RAM there)" "$(dma "$NOT_RAM" $dst 64)" "$CTRL_DONE | $CTRL_ERROR"
expect dma-count "DMA_COUNT (successful copies)" "$(rd "$REG_DMA_COUNT")" "$copies"

# --- INTx: the pending state in IRQ_STATUS and the Status register ------------------------------
wr "$REG_IRQ_STATUS" 32 "$IRQ_DMA_DONE"
expect irq-clear "IRQ_STATUS after writing 1 to clear" "$(rd "$REG_IRQ_STATUS")" 0
wr "$REG_IRQ_ENABLE" 32 "$IRQ_DMA_DONE"
dma $src $dst 16 >/dev/null; copies=$((copies + 1))
expect irq-status "IRQ_STATUS after a copy" "$(rd "$REG_IRQ_STATUS")" "$IRQ_DMA_DONE"
expect irq-pending "Status register Interrupt Status" $(($(cfg 6 2) & 8)) 8
wr "$REG_IRQ_STATUS" 32 "$IRQ_DMA_DONE"
expect irq-acknowledged "Interrupt Status after clearing IRQ_STATUS" $(($(cfg 6 2) & 8)) 0
# With Interrupt Disable set the state is still shown but INTx stays low: the host counts
# exactly one assertion (the copy above).
cfgw 4 2 $(($(cfg 4 2) | 0x400))
dma $src $dst 16 >/dev/null; copies=$((copies + 1))
expect irq-disabled-pending "Interrupt Status with Interrupt Disable set" $(($(cfg 6 2) & 8)) 8
wr "$REG_IRQ_STATUS" 32 "$IRQ_DMA_DONE"
cfgw 4 2 $(($(cfg 4 2) & ~0x400))
echo "INFO intx-assertions-expected: 1"
expect dma-count-final "DMA_COUNT" "$(rd "$REG_DMA_COUNT")" "$copies"

# --- the guest image for the virtio-blk phase: modules and ext2 ---------------------------------
for m in $(cat /etc/modules); do
    truth "module-$m" "$m is loaded" grep -q "^$m " /proc/modules
done
truth virtio-pci-driver "the virtio-pci driver is registered" test -d /sys/bus/pci/drivers/virtio-pci
truth virtio-unbound "no virtio device (the stand-in is not one)" \
    test -z "$(ls /sys/bus/virtio/devices)"
ext2() {
    dd if=/dev/zero of=/tmp/disk.img bs=1024 count=8192 2>/dev/null &&
    losetup /dev/loop0 /tmp/disk.img && mke2fs /dev/loop0 >/dev/null &&
    mount -t ext2 /dev/loop0 /mnt &&
    for i in 1 2 3; do dd if=/dev/urandom of=/mnt/file$i bs=1024 count=$((i * 300)) 2>/dev/null; done &&
    (cd /mnt && md5sum file1 file2 file3 > /tmp/sums) && sync && umount /mnt &&
    echo 3 > /proc/sys/vm/drop_caches && mount -t ext2 /dev/loop0 /mnt &&
    (cd /mnt && md5sum -c /tmp/sums >/dev/null) && umount /mnt && losetup -d /dev/loop0
}
truth ext2 "mke2fs, mount, write 1.8 MB, sync, umount, drop caches, remount, md5sums match (loop device)" ext2

exit $failures
