"""board.cache and board.host: cache location, keys, atomic entries, the host tool table."""

from __future__ import annotations

from pathlib import Path

import pytest

from board.cache import cache_root, content_key, publish_dir, publish_file
from board.errors import MissingToolError
from board.host import check_host_tools


def test_cache_root_follows_the_environment(tmp_path: Path) -> None:
    assert cache_root({"PLATFORM_HOSTDEV_CACHE": str(tmp_path)}) == tmp_path.resolve()
    assert cache_root({"HOME": "/home/x"}) == Path("/home/x/.cache/platform-hostdev")


def test_content_key_depends_on_every_input() -> None:
    base = {"kernel": "6.12.117-1~deb12u1", "packages": ["a=1", "b=2"]}
    assert content_key(base) == content_key(dict(reversed(base.items())))
    assert content_key(base) != content_key({**base, "packages": ["a=1", "b=3"]})


def test_publish_dir_is_atomic_and_a_cache_hit_does_nothing(tmp_path: Path) -> None:
    final = tmp_path / "entry"

    def broken(tmp: Path) -> None:
        (tmp / "half").write_text("x")
        raise RuntimeError("build step failed")

    with pytest.raises(RuntimeError):
        publish_dir(final, broken)
    assert not final.exists() and list(tmp_path.iterdir()) == []
    publish_dir(final, lambda tmp: (tmp / "done").write_text("ok"))
    publish_dir(final, lambda tmp: pytest.fail("rebuilt a cached entry"))
    assert (final / "done").read_text() == "ok"
    file = publish_file(tmp_path / "file", lambda tmp: tmp.write_text("1"))
    assert file.read_text() == "1"


def test_missing_host_tools_are_all_named_with_their_package() -> None:
    with pytest.raises(MissingToolError) as caught:
        check_host_tools({"no-such-tool-xyz": "pkg-xyz", "/no/such/file": "pkg-file",
                          "sh": "dash"})
    assert caught.value.missing == {"no-such-tool-xyz": "pkg-xyz", "/no/such/file": "pkg-file"}
    assert "apt-get install -y --no-install-recommends pkg-file pkg-xyz" in str(caught.value)
