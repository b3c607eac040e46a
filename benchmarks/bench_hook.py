#!/usr/bin/env python3
"""Hook benchmark: what the libvirt qemu hook costs a domain start, as a subprocess.

Run from the repository root:

    .venv/bin/python benchmarks/bench_hook.py [--rounds 30] [--devices 2000] \
        [--interpreter /usr/bin/python3]

In one run, interleaved round by round (so drift hits every case alike), with
the median of ``--rounds`` runs each:

* (a) ``<python> -c pass``: a bare start of the interpreter the hook is
  rendered with (the baseline; ``-S -c pass``, the hook's own start, is printed
  for reference). ``--interpreter`` picks it: by default Debian's
  /usr/bin/python3, which runs the hook on a host where the package is
  installed; the venv's python (``--interpreter .venv/bin/python``) starts
  slower (its editable-install finder), which flatters the ratios;
* (b) the rendered hook (``cli.hook.render_hook``) as libvirt runs it
  (argv ``DOMAIN OP SUBOP -``, the domain XML on stdin, libvirt's environment)
  for a realistic domain of a few KB with NO platform hostdevs, for each of
  prepare, start, started, stopped and release: the fast path;
* (c) prepare, then release, of a domain with 4 platform hostdevs on a fake
  host of a synthetic SoC (tests/support/synthetic.py, 2,000 devices /
  20,000 nodes). The subprocess has no fake kernel behind its sysfs writes,
  so the 4 devices are unmanaged and already bound to vfio-platform with
  their /dev/vfio/N nodes, as tests/fakehost/test_hook_process.py does: the
  figure covers parsing, resolving, ownership and the node hand-over, not a
  driver bind.

Ratios to (a) are printed against the targets (fast path <= 1.3x, slow path
< 6x). The synthetic fake host is cached under
``${PLATFORM_HOSTDEV_CACHE:-~/.cache/platform-hostdev}/bench-hook/`` (keyed by
the sources that build it). Prints figures only; timings are never asserted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugin"), str(REPO)]

from platform_hostdev.cli.hook import render_hook  # noqa: E402
from platform_hostdev.dt.fdt import parse_dtb  # noqa: E402
from platform_hostdev.dt.naming import predict_devices  # noqa: E402
from platform_hostdev.dt.tree import DeviceTree  # noqa: E402
from platform_hostdev.host.fs import HostFs  # noqa: E402

from board.cache import cache_root, content_key, files_digest, publish_dir  # noqa: E402
from tests.support.domains import synced_domain  # noqa: E402
from tests.support.fakehost import build_fake_host  # noqa: E402
from tests.support.fdtwriter import to_dtb  # noqa: E402
from tests.support.synthetic import large_soc  # noqa: E402

ENV = {"LC_ALL": "C", "PATH": "/usr/bin:/bin", "HOME": "/root", "USER": "root",
       "LOGNAME": "root"}  # what libvirt passes to a hook, nothing more
QEMU_UID = 64055
PASSTHROUGH = 4
DEBIAN_PYTHON = "/usr/bin/python3"
FAST_OPS = ("prepare", "start", "started", "stopped", "release")
SUBOP = {"prepare": "begin", "start": "begin", "started": "begin", "stopped": "end",
         "release": "end"}

PLAIN_DOMAIN = """<domain type='kvm' id='7'>
  <name>web01</name>
  <uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid>
  <metadata>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://debian.org/debian/12"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <vcpu placement='static'>4</vcpu>
  <resource><partition>/machine</partition></resource>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/><apic/><vmport state='off'/></features>
  <cpu mode='host-passthrough' check='none' migratable='on'/>
  <clock offset='utc'>
    <timer name='rtc' tickpolicy='catchup'/><timer name='pit' tickpolicy='delay'/>
    <timer name='hpet' present='no'/>
  </clock>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/web01.qcow2' index='2'/>
      <backingStore/>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/seed.iso' index='1'/>
      <target dev='sda' bus='sata'/><readonly/>
      <alias name='sata0-0-0'/>
      <address type='drive' controller='0' bus='0' target='0' unit='0'/>
    </disk>
    <controller type='usb' index='0' model='qemu-xhci' ports='15'>
      <alias name='usb'/>
      <address type='pci' domain='0x0000' bus='0x02' slot='0x00' function='0x0'/>
    </controller>
    <controller type='pci' index='0' model='pcie-root'><alias name='pcie.0'/></controller>
    <controller type='pci' index='1' model='pcie-root-port'>
      <model name='pcie-root-port'/><target chassis='1' port='0x10'/><alias name='pci.1'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'
               multifunction='on'/>
    </controller>
    <controller type='sata' index='0'><alias name='ide'/></controller>
    <controller type='virtio-serial' index='0'><alias name='virtio-serial0'/></controller>
    <interface type='network'>
      <mac address='52:54:00:6b:3c:58'/>
      <source network='default' portid='3b1c2f9e-7c55-4b59-9a43-27a3d1e2f0b1' bridge='virbr0'/>
      <target dev='vnet3'/><model type='virtio'/><alias name='net0'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:aa:01'/><source bridge='br-storage'/>
      <target dev='vnet4'/><model type='virtio'/><mtu size='9000'/><alias name='net1'/>
      <address type='pci' domain='0x0000' bus='0x07' slot='0x00' function='0x0'/>
    </interface>
    <serial type='pty'>
      <source path='/dev/pts/3'/>
      <target type='isa-serial' port='0'><model name='isa-serial'/></target>
      <alias name='serial0'/>
    </serial>
    <console type='pty' tty='/dev/pts/3'>
      <source path='/dev/pts/3'/><target type='serial' port='0'/><alias name='serial0'/>
    </console>
    <channel type='unix'>
      <source mode='bind' path='/run/libvirt/qemu/channel/7-web01/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
      <alias name='channel0'/><address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='tablet' bus='usb'><alias name='input0'/>
      <address type='usb' bus='0' port='1'/></input>
    <input type='mouse' bus='ps2'><alias name='input1'/></input>
    <graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>
      <listen type='address' address='127.0.0.1'/>
    </graphics>
    <video><model type='virtio' heads='1' primary='yes'/><alias name='video0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/></video>
    <watchdog model='itco' action='reset'><alias name='watchdog0'/></watchdog>
    <memballoon model='virtio'><stats period='10'/><alias name='balloon0'/>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></memballoon>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend><alias name='rng0'/>
      <address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></rng>
  </devices>
  <seclabel type='dynamic' model='apparmor' relabel='yes'>
    <label>libvirt-4dea22b3-1d52-d8f3-2516-782e98ab3fa0</label>
    <imagelabel>libvirt-4dea22b3-1d52-d8f3-2516-782e98ab3fa0</imagelabel>
  </seclabel>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+64055</label><imagelabel>+64055:+64055</imagelabel>
  </seclabel>
</domain>
"""


def _host_sources() -> list[Path]:
    """The files whose content decides what the cached fake host looks like."""
    names = ["tests/support/synthetic.py", "tests/support/fakehost.py",
             "tests/support/fdtwriter.py", "plugin/platform_hostdev/dt/naming.py",
             "plugin/platform_hostdev/dt/tree.py", "plugin/platform_hostdev/dt/fdt.py"]
    return [REPO / n for n in names]


def synthetic_host(devices: int) -> tuple[Path, list[str], float]:
    """The cached fake host of the synthetic SoC: (root, 4 devices on vfio, build seconds)."""
    key = content_key({"devices": devices, "sources": files_digest(_host_sources())})
    final = cache_root() / "bench-hook" / f"synthetic-{devices}-{key}"
    built = [0.0]

    def fill(tmp: Path) -> None:
        t0 = time.perf_counter()
        tree = DeviceTree(parse_dtb(to_dtb(large_soc(devices)), "<synthetic>"), "<synthetic>")
        blocks = sorted(p.name for p in predict_devices(tree)
                        if "vendor,block" in tree.by_path[p.dt_path].compatible)
        chosen = blocks[::max(1, len(blocks) // PASSTHROUGH)][:PASSTHROUGH]  # spread out
        host = build_fake_host(tmp / "root", tree=tree, vfio_loaded=True,
                               iommu={name: i for i, name in enumerate(chosen)})
        for name in chosen:
            host.set_driver_override(name, "vfio-platform")
            host.bind(name, "vfio-platform")
            node = host.path(f"/dev/vfio/{host.iommu_group_of(name)}")
            node.parent.mkdir(parents=True, exist_ok=True)
            node.write_text("")
        etc = tmp / "root" / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "passwd").write_text(f"libvirt-qemu:x:{QEMU_UID}:{QEMU_UID}::/:/bin/false\n")
        (etc / "group").write_text(f"libvirt-qemu:x:{QEMU_UID}:\n")
        (tmp / "devices").write_text("\n".join(chosen) + "\n")
        built[0] = time.perf_counter() - t0

    publish_dir(final, fill)
    root = final / "root"
    chosen = (final / "devices").read_text().split()
    # a run interrupted earlier may have left records or a handed-over node behind
    shutil.rmtree(root / "run" / "platform-hostdev", ignore_errors=True)
    for node in (root / "dev" / "vfio").iterdir():
        os.chown(node, 0, 0)
        os.chmod(node, 0o600)
    return root, chosen, built[0]


def timed(argv: list[str], data: bytes | None, expect: int = 0) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, input=data, capture_output=True, env=ENV, timeout=120,
                          check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != expect:
        raise SystemExit(f"{argv[:3]} exited {done.returncode}: "
                         f"{done.stderr.decode(errors='replace')}")
    return elapsed


def hook_argv(hook: Path, domain: str, op: str) -> list[str]:
    return [str(hook), domain, op, SUBOP[op], "-"]


def _hook_text(root: str, interpreter: str) -> str:
    """The hook as 'hook install' writes it, for ``interpreter``.

    For another interpreter than this one, the import path is the source tree
    only: a prepare of unmanaged devices needs nothing outside the stdlib.
    """
    text = render_hook(root)
    if os.path.abspath(interpreter) == os.path.abspath(sys.executable):  # a venv's is a link
        return text
    lines = text.splitlines(keepends=True)
    lines[0] = f"#!{interpreter} -S\n"
    start = next(i for i, line in enumerate(lines) if line.startswith("PACKAGE_PATH = "))
    lines[start] = f"PACKAGE_PATH = {str(REPO / 'plugin')!r}\n"
    return "".join(lines)


def bench(rounds: int, devices: int, interpreter: str) -> int:
    root, chosen, built = synthetic_host(devices)
    fs = HostFs(root)
    n_devices = sum(len(os.listdir(fs.path(f"/sys/bus/{b}/devices")))
                    for b in ("platform", "amba"))
    print(f"synthetic host: {n_devices} devices under {root}"
          + (f" (built in {built:.1f} s)" if built else " (cached)"))
    print(f"passed through: {', '.join(chosen)} (unmanaged, already on vfio-platform: the "
          "hook subprocess has no fake kernel, so no driver bind is timed)")
    passthrough = synced_domain(root, "soc-vm", chosen, managed=False)
    plain = PLAIN_DOMAIN.encode()
    with tempfile.TemporaryDirectory(prefix="bench-hook-") as tmp:
        hook = Path(tmp) / "platform-hostdev"
        hook.write_text(_hook_text(str(root), interpreter))
        hook.chmod(0o755)
        cases: dict[str, Callable[[], float]] = {
            "a: python -c pass": lambda: timed([interpreter, "-c", "pass"], None),
            "   python -S -c pass (reference)": lambda: timed([interpreter, "-S", "-c", "pass"],
                                                          None),
        }
        for op in FAST_OPS:
            cases[f"b: no platform hostdevs, {op}"] = (
                lambda op=op: timed(hook_argv(hook, "web01", op), plain))  # type: ignore[misc]
        owners = root / "run" / "platform-hostdev" / "owners"

        def prepare() -> float:
            elapsed = timed(hook_argv(hook, "soc-vm", "prepare"), passthrough)
            assert len(list(owners.glob("*.json"))) == PASSTHROUGH, "prepare recorded nothing"
            return elapsed

        def release() -> float:
            elapsed = timed(hook_argv(hook, "soc-vm", "release"), passthrough)
            assert not list(owners.glob("*.json")), "release left records"
            return elapsed

        samples: dict[str, list[float]] = {name: [] for name in cases}
        samples["c: 4 devices, prepare"] = []
        samples["c: 4 devices, release"] = []
        for case in cases.values():  # warm the page cache once, untimed
            case()
        prepare()
        release()
        for i in range(rounds):
            order = list(cases.items())
            order = order[i % len(order):] + order[:i % len(order)]  # rotate: cancel drift
            for name, case in order:
                samples[name].append(case())
            samples["c: 4 devices, prepare"].append(prepare())
            samples["c: 4 devices, release"].append(release())
    print(f"interpreter {interpreter}; {PLAIN_DOMAIN.count(chr(10))}-line plain domain XML "
          f"({len(plain):,} bytes); passthrough domain XML {len(passthrough):,} bytes; "
          f"{rounds} rounds, medians:")
    base = statistics.median(samples["a: python -c pass"])
    for name, values in samples.items():
        median = statistics.median(values)
        target = 1.3 if name.startswith("b:") else 6.0 if name.startswith("c:") else None
        verdict = ""
        if target is not None:
            verdict = (f"  target {'<=' if target == 1.3 else '<'} {target:g}x: "
                       f"{'met' if median / base <= target else 'MISSED'}")
        print(f"  {name:34} {median * 1000:8.1f} ms  {median / base:5.2f}x  "
              f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}){verdict}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed runs per case")
    parser.add_argument("--devices", type=int, default=2000, help="synthetic SoC size")
    parser.add_argument("--interpreter", default=DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON)
                        else sys.executable,
                        help=f"the python the hook runs with (default {DEBIAN_PYTHON})")
    args = parser.parse_args()
    return bench(args.rounds, args.devices, args.interpreter)


if __name__ == "__main__":
    sys.exit(main())
