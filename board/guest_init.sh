#!/bin/busybox sh
# /init of the board's initramfs (written by board/initramfs.py; see board/run.py).
# One initramfs serves every machine of board/machines.py; board.machine=<name> on the
# kernel command line (virt when absent) picks the branch:
#   virt:    loads /etc/board/modules.virt.load (9p, virtio_mmio, the vfio modules with
#            their parameters), mounts the 9p shares (repo at /repo read-only, board
#            control at /board read-only, results at /out), runs /board/cmd.sh in /repo,
#            prints the end marker with its exit code, then powers off.
#   raspi3b: loads /etc/board/modules.raspi3b.load (sdhost, ext4, the vfio modules),
#            mounts the SD card read-write at /mnt/sd; /repo and /board/cmd.sh came in
#            an archive appended to the initramfs (board/transport.py). After the
#            command, every file under /out is sent over the console in framed base64
#            before the end marker; the machine cannot power off (it halts), the host
#            stops QEMU on the end marker.
# The host reads these marker lines, each carrying the run's nonce:
#   @@BOARD-INIT <nonce> <uptime>          /init started
#   @@BOARD-SETUP-FAILED <nonce> <what>    a mount or insmod failed
#   @@BOARD-FILE <nonce> <size> <sha256> <path>, @@BOARD-DATA <nonce> <base64>,
#   @@BOARD-FILE-END <nonce>               a result file (raspi3b)
#   @@BOARD-EXIT <nonce> <code>            the command ended with <code>
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev || echo "/init: mount devtmpfs on /dev failed"
mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 shm /dev/shm
nonce=$(sed -n 's/.*board\.nonce=\([0-9a-zA-Z]*\).*/\1/p' /proc/cmdline)
machine=$(sed -n 's/.*board\.machine=\([0-9a-z]*\).*/\1/p' /proc/cmdline)
machine=${machine:-virt}
echo "@@BOARD-INIT $nonce $(cut -d' ' -f1 /proc/uptime)"

fail() {
    echo "@@BOARD-SETUP-FAILED $nonce $*"
    sync
    poweroff -f
}

release=$(uname -r)
[ -f "/etc/board/modules.$machine.load" ] || fail "no /etc/board/modules.$machine.load: \
board.machine=$machine is not a machine of this initramfs"
while read -r module params; do
    [ -n "$module" ] || continue
    # shellcheck disable=SC2086  # params are word-split on purpose
    insmod "/lib/modules/$release/$module" $params || fail "insmod $module $params"
done < "/etc/board/modules.$machine.load"

# Every regular file under /out, framed on the console (decoded by board/transport.py).
send_results() {
    echo 1 > /proc/sys/kernel/printk  # no kernel message may cut a data line
    cd /out || return 1
    find . -type f | sort | while read -r file; do
        file=${file#./}
        size=$(wc -c < "$file")
        sum=$(sha256sum "$file" | cut -d' ' -f1)
        echo "@@BOARD-FILE $nonce $size $sum $file"
        base64 "$file" | sed "s/^/@@BOARD-DATA $nonce /"
        echo "@@BOARD-FILE-END $nonce"
    done
    cd /
}

mkdir -p /repo /board /out
case $machine in
virt)
    opts=trans=virtio,version=9p2000.L,msize=262144
    mount -t 9p -o "$opts,ro,cache=loose" repo /repo || fail "mount 9p tag repo at /repo"
    mount -t 9p -o "$opts,ro" board /board || fail "mount 9p tag board at /board"
    mount -t 9p -o "$opts" out /out || fail "mount 9p tag out at /out"
    ;;
raspi3b)
    # the sdhost driver finds the card asynchronously (mmc_rescan): wait up to 20 s
    tries=0
    while [ ! -b /dev/mmcblk0 ] && [ $tries -lt 200 ]; do
        usleep 100000
        tries=$((tries + 1))
    done
    [ -b /dev/mmcblk0 ] || fail "no /dev/mmcblk0 20 s after loading the sdhost driver"
    mkdir -p /mnt/sd
    mount -t ext2 -o rw /dev/mmcblk0 /mnt/sd || fail "mount /dev/mmcblk0 (ext2) at /mnt/sd"
    [ -f /board/cmd.sh ] || fail "no /board/cmd.sh: the run's archive was not appended"
    ;;
*)
    fail "unknown board.machine=$machine"
    ;;
esac
ldconfig || fail "ldconfig"
echo "board $nonce $machine" > /run/platform-hostdev-board

export HOME=/root USER=root LOGNAME=root TERM=dumb
export PYTHONPATH=/repo/plugin PYTHONDONTWRITEBYTECODE=1
export PLATFORM_HOSTDEV_BOARD=1 PLATFORM_HOSTDEV_BOARD_MACHINE=$machine BOARD_OUT=/out
cd /repo || fail "cd /repo"
sh /board/cmd.sh < /dev/null
rc=$?
cd /
sync
if [ "$machine" = raspi3b ]; then
    send_results || echo "/init: sending the results in /out failed"
fi
echo "@@BOARD-EXIT $nonce $rc"
if [ "$machine" = virt ]; then
    umount /out /board /repo 2>/dev/null
else
    umount /mnt/sd 2>/dev/null
fi
poweroff -f
