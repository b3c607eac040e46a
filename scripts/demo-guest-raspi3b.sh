#!/bin/sh
# Runs INSIDE the emulated Raspberry Pi 3 model B (scripts/demo boots it with
# --machine raspi3b): Debian's arm64 kernel and Debian's own bcm2837-rpi-3-b.dtb, a
# real SoC whose devices supply each other (clocks, mailbox, pinctrl, DMA).
set -e
phd() {
    echo
    echo "raspi3b# platform-hostdev $*"
    python3 -m platform_hostdev "$@"
}
refused() {  # a refusal is the point: show it, and fail the demo if it went through
    echo
    echo "raspi3b# platform-hostdev $*"
    if python3 -m platform_hostdev "$@"; then
        echo "demo: 'platform-hostdev $*' should have been refused" >&2
        exit 1
    fi
}
echo "== the SoC's DMA engine: sixteen lines on the BCM2836 armctrl controller, all level"
phd show 3f007000.dma-controller
echo
echo "== the clock controller: what depends on it (device links from the kernel)"
phd nodedev-dumpxml 3f101000.cprman
echo
echo "== refused: the clock controller supplies the console and the SD card under /mnt/sd"
refused nodedev-detach 3f101000.cprman
echo
echo "== refused: the SD host uses the DMA engine through the DT alone (no device link)"
refused nodedev-detach 3f007000.dma-controller
echo
echo "== a leaf: the mini UART moves to vfio-platform, is inspected through VFIO, and back"
phd nodedev-detach 3f215040.serial
phd inspect 3f215040.serial
phd nodedev-reattach 3f215040.serial
phd nodedev-list --compatible 'brcm,bcm2835-aux-uart'
