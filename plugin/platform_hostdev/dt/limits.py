"""The bounds every device-tree reader keeps to, each the kernel's own.

A value beyond one is a located :class:`~platform_hostdev.errors.DeviceTreeError`
(the node, the property, the limit and where the kernel sets it, and the fix)
raised before anything is read or allocated past it, so a few hundred bytes of
DTB cannot make a reader allocate gigabytes or walk for minutes.

* :data:`OF_MAX_ADDR_CELLS` (4): ``#address-cells`` (drivers/of/address.c
  ``OF_MAX_ADDR_CELLS``, ``OF_CHECK_ADDR_COUNT``), and ``#size-cells`` held to
  the same 4 (the kernel reads a size with include/linux/of.h
  ``of_read_number()``, which keeps 64 bits: 2 cells).
* :data:`MAX_PHANDLE_ARGS` (16, include/linux/of.h): the argument cells of a
  phandle reference (``#clock-cells``, ``#gpio-cells``, ...;
  drivers/of/base.c ``of_phandle_iterator_args()``), ``#interrupt-cells``,
  and an interrupt nexus's ``#address-cells`` + ``#interrupt-cells``
  (drivers/of/irq.c ``of_irq_parse_raw()`` and ``of_irq_parse_imap_parent()``
  refuse more, their match arrays hold ``MAX_PHANDLE_ARGS`` cells).
* :data:`MAX_NODE_DEPTH` (62): drivers/of/fdt.c ``unflatten_dt_nodes()``
  keeps ``nps[FDT_MAX_DEPTH]`` (``FDT_MAX_DEPTH`` 64) and skips every node at
  depth ``FDT_MAX_DEPTH - 1`` or more (the root is at depth 0).
* :data:`MAX_FDT_SIZE` (2 MiB, arch/arm64/include/asm/boot.h): the largest DTB
  an arm64 kernel boots (arch/arm64/mm/mmu.c ``fixmap_remap_fdt()`` refuses a
  larger one). It bounds a DTB, and so its node and property counts: every
  node and every property takes at least 12 bytes of it.
* A live tree (``/sys/firmware/devicetree/base``) was unflattened from such a
  blob: its property values together hold at most the blob's bytes (the
  ``name`` property drivers/of/fdt.c ``populate_properties()`` adds to each
  node copies bytes of the node's name), its nodes and properties number at
  most a sixth of them. :data:`MAX_LIVE_BYTES` and :data:`MAX_LIVE_ENTRIES`
  allow twice that, for what the kernel adds at run time (overlays,
  of_add_property()).
* :data:`NAME_MAX` (255, include/uapi/linux/limits.h): a node or property
  name. drivers/of/kobj.c makes each one a file name under
  /sys/firmware/devicetree/base, and a longer one cannot be looked up there.
* :data:`MAX_IRQ_MAP_HOPS` (32): interrupt-map nexus nodes passed on the way
  to a controller. The kernel's of_irq_parse_raw() walks until it finds one;
  32 is far beyond any real board (they nest one or two) and ends a loop.
  ``interrupt-parent`` chains end at the first node seen twice.
"""
from __future__ import annotations

__all__ = ["OF_MAX_ADDR_CELLS", "MAX_PHANDLE_ARGS", "FDT_MAX_DEPTH", "MAX_NODE_DEPTH",
           "MAX_FDT_SIZE", "MAX_LIVE_BYTES", "MAX_LIVE_ENTRIES", "NAME_MAX", "MAX_IRQ_MAP_HOPS",
           "ADDR_CELLS_LIMIT", "SIZE_CELLS_LIMIT", "ARGS_LIMIT"]

OF_MAX_ADDR_CELLS = 4
MAX_PHANDLE_ARGS = 16
FDT_MAX_DEPTH = 64
MAX_NODE_DEPTH = FDT_MAX_DEPTH - 2
MAX_FDT_SIZE = 2 * 1024 * 1024
MAX_LIVE_BYTES = 2 * MAX_FDT_SIZE
MAX_LIVE_ENTRIES = 2 * (MAX_FDT_SIZE // 6)
NAME_MAX = 255
MAX_IRQ_MAP_HOPS = 32

ADDR_CELLS_LIMIT = (OF_MAX_ADDR_CELLS, "OF_MAX_ADDR_CELLS in drivers/of/address.c")
SIZE_CELLS_LIMIT = (OF_MAX_ADDR_CELLS, "OF_MAX_ADDR_CELLS in drivers/of/address.c, held for "
                                       "sizes too; of_read_number() keeps 64 bits")
ARGS_LIMIT = (MAX_PHANDLE_ARGS, "MAX_PHANDLE_ARGS in include/linux/of.h")
