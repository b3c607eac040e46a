"""The platform-hostdev test suite (tiers: unit, fakehost, libvirt, board, guest)."""
