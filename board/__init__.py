"""The emulated ARM64 board: Debian's arm64 6.12 kernel under qemu-system-aarch64.

A test bench and demo runtime for platform-hostdev. It runs the project's code
against the real vfio-platform and vfio-amba drivers on any x86 Debian 12
machine, with no ARM hardware:

- ``apt_arm64``: a private apt configuration that fetches arm64 packages
  (nothing is installed on the host) and resolves the newest 6.12 kernel;
- ``build``: vfio modules built out of tree (no-IOMMU mode enabled) and an
  initramfs with Python, lxml, pyudev and pytest, cached per kernel version;
- ``run``: boots the board with the repository at /repo and runs one command
  in it, under a watchdog;
- ``machines``: the QEMU machines it boots, ``virt`` (9p shares) and
  ``raspi3b`` (a real SoC with Debian's DTB; ``transport`` carries the
  repository in an appended initramfs archive and the results back on the
  console; ``sdcard`` builds its SD card image).

Command line: ``python3 -m board {info,build,run -- CMD...}`` from the
repository root (``--machine raspi3b`` for the second machine). Host side:
Python standard library only (it runs before the project's virtualenv exists).
"""
