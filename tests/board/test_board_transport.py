"""board.transport: the per-run initrd (cpio append) and the console framing of results."""

from __future__ import annotations

import base64
import hashlib
import io
import stat
from pathlib import Path

import pytest

from board.cpio import CpioWriter
from board.errors import BoardError
from board.transport import (
    FrameError,
    ResultReceiver,
    repo_files,
    write_overlay,
    write_run_initrd,
)


def read_archives(data: bytes) -> list[dict[str, tuple[int, bytes]]]:
    """Every newc archive of a concatenation, as the kernel reads them (zero padding between)."""
    archives: list[dict[str, tuple[int, bytes]]] = []
    pos = 0
    while pos < len(data):
        if data[pos:pos + 4] == b"\0\0\0\0":
            pos += 4
            continue
        entries: dict[str, tuple[int, bytes]] = {}
        while True:
            assert pos % 4 == 0 and data[pos:pos + 6] == b"070701", f"no header at {pos}"
            fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
            mode, size, namesize = fields[1], fields[6], fields[11]
            name = data[pos + 110:pos + 110 + namesize - 1].decode()
            pos += 110 + namesize
            pos += -pos % 4
            body = data[pos:pos + size]
            pos += size + (-size % 4)
            if name == "TRAILER!!!":
                break
            entries[name] = (mode, body)
        archives.append(entries)
    return archives


def make_repo(root: Path) -> Path:
    for rel, text in {"plugin/pkg/mod.py": "x = 1\n", "tests/test_a.py": "def test(): pass\n",
                      "setup.py": "# setup\n", ".git": "gitdir: elsewhere\n",
                      "plugin/pkg/__pycache__/mod.cpython-311.pyc": "stale",
                      "plugin/pkg/mod.pyc": "stale", ".venv/bin/python": "no",
                      "plugin/x.egg-info/PKG-INFO": "no", "tests/.pytest_cache/v": "no"}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "tests/test_a.py").chmod(0o755)
    (root / "plugin/link").symlink_to("pkg")
    return root


def test_repo_copy_leaves_out_vcs_virtualenvs_and_caches(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert [p.as_posix() for p in repo_files(repo)] == [
        "setup.py", "plugin/link", "plugin/pkg/mod.py", "tests/test_a.py"]


def test_run_initrd_is_the_base_then_the_repo_and_command(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    base = tmp_path / "base.cpio"
    with base.open("wb") as out:
        archive = CpioWriter(out)
        archive.add_dir("repo")
        archive.add_dir("board")
        archive.add_file("init", b"#!/bin/sh\n", 0o755)
        archive.close()
    with base.open("ab") as out:  # a base whose length is not a multiple of 4
        out.write(b"\0\0")
    initrd = tmp_path / "initrd"
    write_run_initrd(initrd, base, repo, "python3 -m pytest tests\n")
    data = initrd.read_bytes()
    assert data.startswith(base.read_bytes())
    first, second = read_archives(data)
    assert set(first) == {"repo", "board", "init"}
    assert second["board/cmd.sh"][1] == b"python3 -m pytest tests\n"
    assert second["repo/plugin/pkg/mod.py"][1] == b"x = 1\n"
    mode, target = second["repo/plugin/link"]
    assert stat.S_ISLNK(mode) and target == b"pkg"
    assert stat.S_IMODE(second["repo/tests/test_a.py"][0]) == 0o755
    assert stat.S_ISDIR(second["repo/plugin/pkg"][0])
    assert not [name for name in second if ".git" in name or "cache" in name
                or ".venv" in name or name.endswith((".pyc", "PKG-INFO"))]


def test_a_huge_work_tree_is_refused_with_its_culprit(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "tests/big.bin").write_bytes(b"\0" * 200)
    monkeypatch.setattr("board.transport.MAX_REPO_BYTES", 100)
    with pytest.raises(BoardError, match="tests/big.bin"):
        write_overlay(CpioWriter(io.BytesIO()), repo, "true\n")


def frames(data: bytes, path: str = "guest-junit.xml") -> list[tuple[str, str]]:
    """What guest_init.sh's send_results prints for one file (kind, rest after the nonce)."""
    encoded = base64.encodebytes(data).decode().splitlines()  # 76 columns, as busybox
    return [("FILE", f"{len(data)} {hashlib.sha256(data).hexdigest()} {path}"),
            *(("DATA", line) for line in encoded), ("FILE-END", "")]


def feed(receiver: ResultReceiver, lines: list[tuple[str, str]]) -> None:
    for kind, rest in lines:
        {"FILE": receiver.begin, "DATA": receiver.data,
         "FILE-END": lambda _: receiver.end()}[kind](rest)


def test_framed_files_come_back_byte_for_byte(tmp_path: Path) -> None:
    receiver = ResultReceiver(tmp_path)
    xml = b"<testsuites>" + bytes(range(256)) * 3 + b"</testsuites>\n"
    feed(receiver, frames(xml) + frames(b"", "sub/empty.txt"))
    assert (tmp_path / "guest-junit.xml").read_bytes() == xml
    assert (tmp_path / "sub/empty.txt").read_bytes() == b""
    assert receiver.received == ["guest-junit.xml", "sub/empty.txt"]
    assert receiver.in_progress is None


def test_a_damaged_data_line_names_the_file(tmp_path: Path) -> None:
    lines = frames(b"x" * 200)
    kind, rest = lines[1]
    lines[1] = (kind, rest[:10] + "[   12.3] mmc0: " + rest[10:])  # a kernel message cut in
    with pytest.raises(FrameError, match="guest-junit.xml came back with damaged base64"):
        feed(ResultReceiver(tmp_path), lines)
    assert not (tmp_path / "guest-junit.xml").exists()


def test_a_lost_line_fails_the_size_and_digest_check(tmp_path: Path) -> None:
    lines = frames(b"abcd" * 100)
    del lines[2]
    with pytest.raises(FrameError, match=r"came back damaged: \d+ bytes"):
        feed(ResultReceiver(tmp_path), lines)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside", "a/../../b", ""])
def test_a_path_outside_out_is_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(FrameError, match="not relative to /out"):
        ResultReceiver(tmp_path).begin(f"0 {'0' * 64} {path}")


def test_frames_out_of_order_are_refused(tmp_path: Path) -> None:
    receiver = ResultReceiver(tmp_path)
    with pytest.raises(FrameError, match="outside a file frame"):
        receiver.data("AAAA")
    with pytest.raises(FrameError, match="end marker without a file header"):
        receiver.end()
    receiver.begin(f"3 {'0' * 64} a.txt")
    assert receiver.in_progress == "a.txt"
    with pytest.raises(FrameError, match="a.txt was cut off"):
        receiver.begin(f"3 {'0' * 64} b.txt")
    with pytest.raises(FrameError, match="malformed"):
        ResultReceiver(tmp_path).begin("three 1234 a.txt")
