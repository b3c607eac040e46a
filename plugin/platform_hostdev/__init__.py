"""platform-hostdev: device-tree platform/AMBA device passthrough for libvirt."""

__version__ = "0.1.0"
