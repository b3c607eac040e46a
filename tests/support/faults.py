"""OSError injection at the hook's host writes, for the fault tests.

Every kind of write the hook and the binding code make is a fault point:
a sysfs attribute (the fake kernel refuses it with EIO, as a driver's store
callback may), a state record written (ENOSPC: /run is full), a record
removed (EROFS: /run was remounted read-only), a /dev node's chown or chmod
(EPERM). :func:`failing` makes the ``at``-th write of any kind fail, once or
from then on (``persistent``), and lists the writes it saw.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from platform_hostdev.host import statefiles
from platform_hostdev.host.attributes import AttributeWriteError, WritableHostFs

__all__ = ["failing", "fault_points"]


def _sysfs(args: tuple[Any, ...]) -> OSError:
    return AttributeWriteError(errno.EIO, args[1], args[2])


def _errno(code: int) -> Any:
    def make(args: tuple[Any, ...]) -> OSError:
        path = next((str(a) for a in args if isinstance(a, (str, os.PathLike))), None)
        return OSError(code, os.strerror(code), path)
    return make


def fault_points(sysfs: type[WritableHostFs]) -> tuple[tuple[Any, str, Any], ...]:
    """(owner, attribute, the OSError for its arguments): every write kind that can fail;
    ``sysfs`` is the class whose write_attr writes attributes (the fake kernel, or
    WritableHostFs on a real one)."""
    return ((sysfs, "write_attr", _sysfs),
            (statefiles, "atomic_write", _errno(errno.ENOSPC)),
            (statefiles.RecordStore, "remove", _errno(errno.EROFS)),
            (os, "chown", _errno(errno.EPERM)),
            (os, "chmod", _errno(errno.EPERM)))


@contextmanager
def failing(monkeypatch: pytest.MonkeyPatch, at: int, persistent: bool = False, *,
            sysfs: type[WritableHostFs] = WritableHostFs) -> Iterator[list[str]]:
    """The ``at``-th write (and, ``persistent``, every later one) raises its OSError;
    yields the writes seen, as ``owner.name``."""
    seen: list[str] = []
    for owner, name, error in fault_points(sysfs):
        original = getattr(owner, name)

        def counted(*args: Any, _original: Any = original, _error: Any = error,
                    _label: str = f"{getattr(owner, '__name__', owner)}.{name}",
                    **kwargs: Any) -> Any:
            seen.append(_label)
            if len(seen) == at or (persistent and len(seen) > at):
                raise _error(args)
            return _original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)
    try:
        yield seen
    finally:
        monkeypatch.undo()
