"""The demo's second half (scripts/demo): the board's device in a real libvirtd.

A private libvirtd + virtlogd (the test tier's, in their own mount namespace)
is started; a domain XML holding the board's a000000.virtio_mmio (by its DT
path, resolved against the board's device tree) is translated, defined, given
its generated guest device tree, and `virsh domxml-to-native` shows the QEMU
arguments. Everything is removed afterwards.
"""
from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugin")]

from platform_hostdev.cli import main as cli  # noqa: E402

from tests.libvirt.daemon import start, stop  # noqa: E402
from tests.support.corpus import qemu_virt_dtb  # noqa: E402

DOMAIN = """<domain type='qemu'>
  <name>demo-board-passthrough</name>
  <memory unit='MiB'>512</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='aarch64' machine='virt'>hvm</type>
  </os>
  <cpu mode='custom'><model>cortex-a57</model></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>
    <!-- the emulated board's virtio-mmio transport, named by its DT path -->
    <hostdev mode='subsystem' type='platform' managed='yes'>
      <source>
        <devicetree path='/virtio_mmio@a000000'/>
      </source>
    </hostdev>
    <console type='pty'/>
  </devices>
</domain>
"""


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def phd(*argv: str, state: Path) -> None:
    print(f"host# platform-hostdev {' '.join(argv)}", flush=True)
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), cli.Context(out=out, err=err, root=str(state)))
    sys.stdout.write(out.getvalue())
    sys.stdout.write(err.getvalue())
    if code != 0:
        raise SystemExit(f"platform-hostdev {argv[0]} failed with exit code {code}")


def main() -> int:
    board_dt = qemu_virt_dtb()
    work = Path(tempfile.mkdtemp(prefix="phd-demo-"))
    daemon = start(work / "libvirt")
    uri = daemon.uri
    try:
        xml = work / "domain.xml"
        xml.write_text(DOMAIN)
        print(f"(the board's device tree: {board_dt}; libvirtd {uri})")
        step("the user form: a <hostdev type='platform'> by DT path")
        print(DOMAIN)
        step("translate: what libvirt accepts (metadata + qemu:commandline + locked memory)")
        phd("--dtb", str(board_dt), "translate", str(xml), state=work)
        step("define in a real libvirtd 11.3")
        phd("--dtb", str(board_dt), "define", str(xml), "-c", uri, state=work)
        step("sync: the guest device tree QEMU cannot build for vfio-platform")
        phd("--dtb", str(board_dt), "sync", "demo-board-passthrough", "-c", uri, state=work)
        step("virsh domxml-to-native: the QEMU command line libvirt will run")
        native = subprocess.run(["virsh", "-c", uri, "domxml-to-native", "qemu-argv",
                                 "--domain", "demo-board-passthrough"],
                                capture_output=True, text=True, check=True).stdout
        print(native.replace(" -", " \\\n  -"))
        step("dumpxml: back in the user form")
        phd("dumpxml", "demo-board-passthrough", "-c", uri, state=work)
        subprocess.run(["virsh", "-c", uri, "undefine", "demo-board-passthrough"],
                       capture_output=True, check=True)
    finally:
        stop(daemon)
    return 0


if __name__ == "__main__":
    sys.exit(main())
