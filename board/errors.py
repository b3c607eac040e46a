"""Errors of the board tool: each message says what was found and how to fix it."""

from __future__ import annotations

__all__ = [
    "BoardError",
    "BuildError",
    "DownloadError",
    "GuestCrashError",
    "GuestError",
    "GuestSetupError",
    "GuestTimeoutError",
    "GuestTransferError",
    "MissingToolError",
]


class BoardError(Exception):
    """Base of every error the board tool reports to a user."""


class MissingToolError(BoardError):
    """A host program the board needs is not installed."""

    def __init__(self, missing: dict[str, str]) -> None:
        self.missing = dict(missing)
        tools = ", ".join(f"{tool} (Debian package {pkg})" for tool, pkg in missing.items())
        pkgs = " ".join(sorted(set(missing.values())))
        backports = (" (qemu-system-arm comes from bookworm-backports: add "
                     "-t bookworm-backports)" if "qemu-system-arm" in missing.values() else "")
        super().__init__(
            f"missing host tools: {tools}. Install them with scripts/setup-host, or: "
            f"apt-get install -y --no-install-recommends {pkgs}{backports}"
        )


class DownloadError(BoardError):
    """An arm64 package could not be resolved or fetched."""


class BuildError(BoardError):
    """Building the vfio modules or the initramfs failed."""


class GuestError(BoardError):
    """The guest did not run the command to its end; carries the console tail."""

    def __init__(self, message: str, output: str) -> None:
        self.output = output
        tail = "\n".join(output.splitlines()[-25:])
        super().__init__(f"{message}\n--- last guest console lines ---\n{tail}")


class GuestTimeoutError(GuestError):
    """The watchdog killed QEMU: the guest printed no end marker in time."""


class GuestCrashError(GuestError):
    """QEMU exited before the guest printed its end marker (panic, init died)."""


class GuestSetupError(GuestError):
    """The guest's /init failed before running the command (module, mount)."""


class GuestTransferError(GuestError):
    """A result file framed on the console (board/transport.py) came back damaged."""
