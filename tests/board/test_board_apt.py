"""board.apt_arm64 and board.debversion without the network: parsing and resolution logic."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from board.apt_arm64 import AptArm64, Kernel, Package, parse_stanzas
from board.aptsources import Archive, Archives, discover, parse_deb822, parse_one_line
from board.debversion import compare_versions
from board.errors import DownloadError

ORDERED = ["1.0~rc1", "1.0", "1.0-1", "1.0-1+b1", "1.0a", "1.0.1", "6.12.9-1",
           "6.12.95-1~bpo12+1", "6.12.115-2~deb12u1", "6.12.117-1~deb12u1", "1:0.1"]


def test_debian_version_order() -> None:
    for low, high in zip(ORDERED, ORDERED[1:], strict=False):
        assert compare_versions(low, high) == -1, (low, high)
        assert compare_versions(high, low) == 1
    assert compare_versions("1.0", "1.0") == 0
    assert compare_versions("1.00", "1.0") == 0


def test_debian_version_order_agrees_with_dpkg() -> None:
    assert shutil.which("dpkg"), "dpkg (Debian package dpkg) is the reference: install it"
    for left in ORDERED:
        for right in ORDERED:
            expected = subprocess.run(["dpkg", "--compare-versions", left, "lt", right],
                                      check=False, timeout=10).returncode == 0
            assert (compare_versions(left, right) < 0) == expected, (left, right)


SHOW = """\
Package: python3-lxml
Version: 4.9.2-1+deb12u1
Architecture: arm64
Depends: python3 (<< 3.12), python3:any, libxml2 (>= 2.9.0), libxslt1.1 (>= 1.1.26)
Description: long text
 continues here

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Architecture: arm64
Pre-Depends: libc6 | libc6-udeb
Size: 822236
"""


def test_stanzas_and_dependency_groups() -> None:
    lxml, busybox = (Package(name=f["Package"], version=f["Version"], arch=f["Architecture"],
                             depends=f.get("Depends", ""), pre_depends=f.get("Pre-Depends", ""))
                     for f in parse_stanzas(SHOW))
    assert lxml.dependency_groups() == [["python3"], ["python3"], ["libxml2"], ["libxslt1.1"]]
    assert busybox.dependency_groups() == [["libc6", "libc6-udeb"]]
    assert busybox.deb_name == "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb"
    assert busybox.spec == "busybox-static:arm64=1:1.35.0-4+deb12u1+b1"


def test_kernel_names() -> None:
    kernel = Kernel(abi="6.12.117+deb12", version="6.12.117-1~deb12u1")
    assert kernel.release == "6.12.117+deb12-arm64"
    assert kernel.image() == ("linux-image-6.12.117+deb12-arm64", "arm64")
    assert ("linux-kbuild-6.12.117+deb12", "amd64") in kernel.build_packages()
    assert ("linux-source-6.12", "all") in kernel.build_packages()


class FakeApt(AptArm64):
    """AptArm64 over a fixed archive (name -> versions) instead of apt-cache."""

    def __init__(self, tmp: Path, archive: dict[str, list[Package]],
                 provides: dict[str, list[str]] | None = None) -> None:
        super().__init__(tmp)
        self.archive = archive
        self.provided = provides or {}

    def show(self, selectors: Iterable[str], all_versions: bool = False) -> list[Package]:
        found = []
        for selector in selectors:
            versions = self.archive.get(selector.split(":")[0].split("=")[0], [])
            found.extend(versions if all_versions else versions[-1:])
        return found

    def providers(self, virtual: str) -> list[str]:
        return self.provided.get(virtual, [])


def pkg(name: str, version: str = "1", depends: str = "") -> Package:
    return Package(name=name, version=version, arch="arm64", depends=depends)


def test_resolve_kernel_takes_the_newest_metapackage(tmp_path: Path) -> None:
    meta = "linux-image-6.12-arm64"
    archive = {meta: [
        pkg(meta, "6.12.117-1~deb12u1", "linux-image-6.12.117+deb12-arm64 (= 6.12.117-1~deb12u1)"),
        pkg(meta, "6.12.95-1~bpo12+1", "linux-image-6.12.95+bpo-arm64 (= 6.12.95-1~bpo12+1)"),
        pkg(meta, "6.12.9-1", "linux-image-6.12.9-arm64 (= 6.12.9-1)"),
    ]}
    kernel = FakeApt(tmp_path, archive).resolve_kernel()
    assert kernel == Kernel(abi="6.12.117+deb12", version="6.12.117-1~deb12u1")


def test_resolve_kernel_without_metapackage_names_it(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="linux-image-6.12-arm64"):
        FakeApt(tmp_path, {}).resolve_kernel()


def test_closure_follows_alternatives_virtuals_and_exclusions(tmp_path: Path) -> None:
    archive = {
        "app": [pkg("app", depends="libfoo | libbar, python3, debconf-2.0 | debconf")],
        "libfoo": [pkg("libfoo", depends="libc6")],
        "libbar": [pkg("libbar")],
        "libc6": [pkg("libc6", depends="libgcc-s1")],
        "libgcc-s1": [pkg("libgcc-s1", depends="libc6")],
        "python3": [pkg("python3", depends="dpkg")],
        "tool": [pkg("tool", depends="awk")],
        "mawk": [pkg("mawk", depends="libc6")],
    }
    apt = FakeApt(tmp_path, archive, provides={"awk": ["mawk"]})
    names = [p.name for p in apt.closure(["app", "tool"], exclude=["python3", "debconf"])]
    assert names == ["app", "libc6", "libfoo", "libgcc-s1", "mawk", "tool"]


def test_closure_names_an_unsatisfiable_dependency(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, {"app": [pkg("app", depends="nowhere")]})
    with pytest.raises(DownloadError, match="nowhere"):
        apt.closure(["app"])


MIRROR = "http://mirror.example.invalid/debian"
SECURITY = "http://security.example.invalid/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def archives(main: Archive, security: Archive | None = None,
             backports: Archive | None = None) -> Archives:
    return Archives(codename="bookworm", main=main, security=security,
                    backports=backports or main, host_backports=backports is not None)


def test_private_configuration_is_isolated(tmp_path: Path) -> None:
    signed = (("signed-by", KEYRING),)
    apt = AptArm64(tmp_path, archives=archives(Archive(MIRROR, signed, "test"),
                                               Archive(SECURITY, signed, "test")))
    apt.write_config()
    config = apt.config_file.read_text()
    assert 'APT::Architecture "arm64";' in config
    assert f'Dir::State::status "{apt.root}/state/status";' in config
    assert f'Dir::Etc::Parts "{apt.root}/etc/parts";' in config
    assert (apt.root / "state/status").read_text() == ""
    assert not any((apt.root / "etc/sources.list.d").iterdir())
    sources = (apt.root / "etc/sources.list").read_text().splitlines()
    assert [line.split()[-2] for line in sources] == [
        "bookworm", "bookworm-security", "bookworm-backports"]
    assert all("[arch=arm64,amd64 " in line for line in sources)
    assert sources[0] == f"deb [arch=arm64,amd64 signed-by={KEYRING}] {MIRROR} bookworm main"
    assert sources[1].split()[-3] == SECURITY


def test_private_sources_follow_the_hosts_configuration(tmp_path: Path) -> None:
    """The host's snapshot mirror and its options; no security entry; its own backports."""
    snapshot = "http://snapshot.example.invalid/archive/debian/20250520T000000Z"
    host = parse_one_line(
        f"deb [arch=amd64 check-valid-until=no signed-by={KEYRING}] {snapshot} bookworm main\n"
        "deb http://backports.example.invalid/debian bookworm-backports main\n")
    apt = AptArm64(tmp_path, archives=discover(host, "bookworm", env={}))
    assert apt.sources().splitlines() == [
        f"deb [arch=arm64,amd64 check-valid-until=no signed-by={KEYRING}] {snapshot} "
        "bookworm main",
        "deb [arch=arm64,amd64] http://backports.example.invalid/debian bookworm-backports main",
    ]


def test_an_embedded_signed_by_key_becomes_a_keyring_file(tmp_path: Path) -> None:
    key = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n.\nmQINBGPL0BUBEADm\n"
           "-----END PGP PUBLIC KEY BLOCK-----")
    stanza = (f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\nComponents: main\n"
              "Signed-By:\n" + "".join(f" {line}\n" for line in key.splitlines()))
    apt = AptArm64(tmp_path, archives=discover(parse_deb822(stanza), "bookworm", env={}))
    apt.write_config()
    lines = (apt.root / "etc/sources.list").read_text().splitlines()
    assert len(lines) == 2  # bookworm and bookworm-backports, no security archive
    signed_by = dict(parse_one_line(lines[0])[0].options)["signed-by"]
    keyring = Path(signed_by)
    assert keyring.parent == apt.root / "etc" and keyring.suffix == ".asc"
    assert keyring.read_text() == key.replace("\n.\n", "\n\n") + "\n"
    assert apt.lists_age() is None  # never updated with these sources


def test_a_failed_apt_call_names_the_mirrors_and_their_origin(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setattr("board.apt_arm64.check_host_tools", lambda tools: None)
    apt = AptArm64(tmp_path, archives=archives(Archive(MIRROR, (), "debian.sources:2")))
    apt.write_config()
    with pytest.raises(DownloadError) as caught:
        apt._run(["false"], 10, what="apt-get update")
    message = str(caught.value)
    assert f"bookworm: {MIRROR} (from debian.sources:2)" in message
    assert "PLATFORM_HOSTDEV_DEBIAN_MIRROR" in message
