#!/bin/busybox sh
# /init of the board's initramfs (written by board/initramfs.py; see board/run.py).
# Mounts the kernel filesystems, loads the modules listed in /etc/board/modules.load
# (9p, virtio_mmio, the vfio modules with their parameters), mounts the 9p shares
# (repo at /repo read-only, board control at /board read-only, results at /out),
# runs /board/cmd.sh in /repo and prints the end marker with its exit code, then
# powers off. The host reads these marker lines, each carrying the run's nonce:
#   @@BOARD-INIT <nonce> <uptime>          /init started
#   @@BOARD-SETUP-FAILED <nonce> <what>    a mount or insmod failed
#   @@BOARD-EXIT <nonce> <code>            the command ended with <code>
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev || echo "/init: mount devtmpfs on /dev failed"
mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 shm /dev/shm
nonce=$(sed -n 's/.*board\.nonce=\([0-9a-zA-Z]*\).*/\1/p' /proc/cmdline)
echo "@@BOARD-INIT $nonce $(cut -d' ' -f1 /proc/uptime)"

fail() {
    echo "@@BOARD-SETUP-FAILED $nonce $*"
    sync
    poweroff -f
}

release=$(uname -r)
while read -r module params; do
    [ -n "$module" ] || continue
    # shellcheck disable=SC2086  # params are word-split on purpose
    insmod "/lib/modules/$release/$module" $params || fail "insmod $module $params"
done < /etc/board/modules.load

opts=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /repo /board /out
mount -t 9p -o "$opts,ro,cache=loose" repo /repo || fail "mount 9p tag repo at /repo"
mount -t 9p -o "$opts,ro" board /board || fail "mount 9p tag board at /board"
mount -t 9p -o "$opts" out /out || fail "mount 9p tag out at /out"
ldconfig || fail "ldconfig"
echo "board $nonce" > /run/platform-hostdev-board

export HOME=/root USER=root LOGNAME=root TERM=dumb
export PYTHONPATH=/repo/plugin PYTHONDONTWRITEBYTECODE=1
export PLATFORM_HOSTDEV_BOARD=1 BOARD_OUT=/out
cd /repo || fail "cd /repo"
sh /board/cmd.sh < /dev/null
rc=$?
cd /
sync
echo "@@BOARD-EXIT $nonce $rc"
umount /out /board /repo 2>/dev/null
poweroff -f
