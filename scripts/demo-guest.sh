#!/bin/sh
# Runs INSIDE the emulated ARM64 board (scripts/demo boots it): the package's own
# commands on Debian's arm64 kernel with the real vfio-platform/vfio-amba drivers.
set -e
phd() {
    echo
    echo "board# platform-hostdev $*"
    python3 -m platform_hostdev "$@"
}
echo "== discover: every platform and amba device of the board"
phd nodedev-list
echo
echo "== correlate: VFIO regions and IRQs tied to their DT origin"
phd show /virtio_mmio@a000000
phd show 9030000.pl061
phd nodedev-dumpxml a000000.virtio_mmio
echo
echo "== bind: a platform device to vfio-platform, an amba device to vfio-amba"
phd nodedev-detach a000000.virtio_mmio
phd nodedev-detach 9030000.pl061
echo
echo "== inspect: the live VFIO view next to the DT correlation"
phd inspect a000000.virtio_mmio
phd inspect 9030000.pl061
echo
echo "== restore: pl061 goes back to its original driver"
phd nodedev-reattach 9030000.pl061
phd nodedev-reattach a000000.virtio_mmio
phd nodedev-list --compatible 'arm,pl061'
phd nodedev-dumpxml a000000.virtio_mmio --json | grep -E '"(driver|driver_override)"'
