#!/bin/sh
# One boot of the boot-time reservation proof (tests/board/test_reservation_boot.py), run
# in /repo on the virt board: sh tests/board/reserve_boot.sh 1|2
#
# The reservation state lives in /out/etc-platform-hostdev, a directory of the host's kept
# across both boots, bind-mounted on /etc/platform-hostdev. As an installed package would
# have them: /usr/bin/platform-hostdev and the shipped 60-platform-hostdev.rules. Then a
# real boot's coldplug: depmod (libkmod's indexes), systemd-udevd, 'udevadm trigger
# --action=add' for subsystems then devices, 'udevadm settle'. Boot 1 (nothing reserved):
# udev loads qemu_fw_cfg, which binds 9020000.fw-cfg; 'nodedev-detach --persistent'
# moves it to vfio-platform and reserves /fw-cfg@9020000. Boot 2: the same coldplug.
# Facts go to /out/boot<N>/ for the host to judge.
set -u
phase=$1
facts=/out/boot$phase
rm -rf "$facts"
mkdir -p "$facts" /out/etc-platform-hostdev /etc/platform-hostdev
mount --bind /out/etc-platform-hostdev /etc/platform-hostdev || exit 10
cat > /usr/bin/platform-hostdev <<'WRAPPER'
#!/bin/sh
PYTHONPATH=/repo/plugin exec /usr/bin/python3 -m platform_hostdev "$@"
WRAPPER
chmod 755 /usr/bin/platform-hostdev
mkdir -p /usr/lib/udev/rules.d
cp debian/udev/60-platform-hostdev.rules /usr/lib/udev/rules.d/ || exit 11
# busybox has a depmod applet too (no .bin indexes): use kmod's
/sbin/depmod -a || exit 12
dev=/sys/bus/platform/devices/9020000.fw-cfg
{ echo "reserved_before=$(grep -v '^#' /etc/platform-hostdev/reserved 2>/dev/null | tr '\n' ' ')"
  echo "driver_before_udev=$(basename "$(readlink $dev/driver)" 2>/dev/null)"
  echo "module_before_udev=$([ -d /sys/module/qemu_fw_cfg ] && echo loaded || echo absent)"
} > "$facts/facts"
start=$(cut -d' ' -f1 /proc/uptime)
/lib/systemd/systemd-udevd --daemon --debug 2> "$facts/udevd.log" || exit 13
udevadm trigger --type=subsystems --action=add
udevadm trigger --type=devices --action=add
udevadm settle --timeout=280 || echo "settle=timeout" >> "$facts/facts"
end=$(cut -d' ' -f1 /proc/uptime)
driver=$(readlink $dev/driver)
{ echo "coldplug_seconds=$(echo "$start $end" | awk '{print $2 - $1}')"
  echo "driver=${driver##*/}"
  echo "driver_override=$(cat $dev/driver_override)"
  echo "module=$([ -d /sys/module/qemu_fw_cfg ] && echo loaded || echo absent)"
  echo "fw_cfg_driver=$([ -d /sys/bus/platform/drivers/fw_cfg ] && echo registered || echo absent)"
  echo "fw_cfg_probed=$([ -e /sys/firmware/qemu_fw_cfg/rev ] && echo yes || echo no)"
  echo "journal=$(ls /run/platform-hostdev 2>/dev/null | grep -c '\.json$')"
} >> "$facts/facts"
udevadm info --query=property --path=/devices/platform/9020000.fw-cfg > "$facts/udev-properties"
dmesg > "$facts/dmesg"
if [ "$phase" = 1 ]; then
    platform-hostdev nodedev-detach --persistent 9020000.fw-cfg --json > "$facts/detach.json" \
        2> "$facts/detach.err"
    echo "detach_rc=$?" >> "$facts/facts"
fi
platform-hostdev nodedev-list --json > "$facts/list.json" 2> "$facts/list.err"
platform-hostdev check-host --json > "$facts/check-host.json" 2>&1
udevadm control --exit
sync
