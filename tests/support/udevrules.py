"""A reader of udev rules files, for the keys our rule uses, as systemd-udevd 252 reads them.

udev(7) and src/udev/udev-rules.c (systemd v252): one rule a line, ``#``
comments, comma-separated ``KEY[{attr}]OP"value"`` tokens; ``==``/``!=``
match (a shell glob, ``|`` separating alternatives, udev-rules.c
token_match_string), ``=``/``+=``/``:=`` assign. A rule's assignments apply
only when all its matches hold; ``GOTO`` jumps to the rule with that
``LABEL``. ``IMPORT{program}`` runs its program at once, while the rules are
read, and imports its ``KEY=value`` lines as properties; ``RUN`` programs are
collected and run after the last rule. ``TEST`` checks that a file exists.

:func:`parse_rules` refuses what udevd would refuse or ignore (an unknown key,
a match on an assign-only key, a missing label): a rule udev would drop is a
failure here, not a silent pass. :func:`process` runs one event through the
rules with a caller-supplied program runner.
"""
from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = ["Token", "Rule", "RulesError", "parse_rules", "process", "EventResult"]

_TOKEN = re.compile(r'\s*([A-Z_]+)(?:\{([^}]*)\})?\s*(==|!=|\+=|-=|:=|=)\s*"((?:[^"\\]|\\.)*)"\s*'
                    r'(?:,|$)')
_MATCH_ONLY = {"ACTION", "SUBSYSTEM", "KERNEL", "DEVPATH", "DRIVER", "TEST"}
_ASSIGN_ONLY = {"GOTO", "LABEL", "RUN"}
_EITHER = {"ENV", "IMPORT"}
_NEEDS_ATTR = {"ENV", "IMPORT"}
_IMPORT_TYPES = {"program", "builtin", "file", "db", "cmdline", "parent"}


class RulesError(ValueError):
    """A rules file udevd would refuse or partly ignore."""


class Token(NamedTuple):
    key: str
    attr: str | None
    op: str
    value: str


class Rule(NamedTuple):
    line: int
    tokens: tuple[Token, ...]


class EventResult(NamedTuple):
    """What the rules did with one event: the programs imported, the resulting properties,
    the RUN list."""

    imported: tuple[str, ...]
    properties: dict[str, str]
    run: tuple[str, ...]


def parse_rules(text: str) -> list[Rule]:
    rules = []
    labels = set()
    gotos = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            raise RulesError(f"line {number}: continuation lines are not used here")
        tokens = []
        pos = 0
        while pos < len(line):
            match = _TOKEN.match(line, pos)
            if match is None:
                raise RulesError(f"line {number}: cannot parse {line[pos:]!r}")
            key, attr, op, value = match.groups()
            if key not in _MATCH_ONLY | _ASSIGN_ONLY | _EITHER:
                raise RulesError(f"line {number}: unknown key {key}")
            if key in _MATCH_ONLY and op not in ("==", "!="):
                raise RulesError(f"line {number}: {key} can only be matched")
            if key in _ASSIGN_ONLY and op in ("==", "!="):
                raise RulesError(f"line {number}: {key} can only be assigned")
            if key in _NEEDS_ATTR and not attr:
                raise RulesError(f"line {number}: {key} needs {{...}}")
            if key == "IMPORT" and attr not in _IMPORT_TYPES:
                raise RulesError(f"line {number}: unknown IMPORT type {attr}")
            if key == "LABEL":
                labels.add(value)
            if key == "GOTO":
                gotos.append((number, value))
            tokens.append(Token(key, attr, op, value))
            pos = match.end()
        rules.append(Rule(number, tuple(tokens)))
    for number, label in gotos:
        if label not in labels:
            raise RulesError(f"line {number}: GOTO={label!r} has no LABEL")
    return rules


def _glob(value: str, pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(value, alt) for alt in pattern.split("|"))


def _substitute(value: str, props: Mapping[str, str]) -> str:
    return re.sub(r"\$env\{([^}]+)\}", lambda m: props.get(m.group(1), ""), value)


def process(rules: list[Rule], event: Mapping[str, str], root: Path,
            run_program: Callable[[list[str], dict[str, str]], tuple[int, str]]) -> EventResult:
    """Run one event (its properties: ACTION, SUBSYSTEM, DEVPATH, the uevent's keys) through
    ``rules``; ``TEST`` paths are looked up below ``root``; ``run_program(argv, env)`` gives
    an IMPORT{program}'s exit code and stdout."""
    props = dict(event)
    imported: list[str] = []
    run: list[str] = []
    index = 0
    while index < len(rules):
        rule = rules[index]
        index += 1
        holds = True
        for token in rule.tokens:
            if token.op not in ("==", "!="):
                continue
            if token.key == "TEST":
                found = (root / _substitute(token.value, props).lstrip("/")).exists()
            elif token.key == "ENV":
                found = _glob(props.get(token.attr or "", ""), token.value)
            elif token.key == "IMPORT":
                raise RulesError(f"line {rule.line}: IMPORT as a match is not modelled")
            else:
                found = _glob(props.get(token.key, ""), token.value)
            if found != (token.op == "=="):
                holds = False
                break
        if not holds:
            continue
        for token in rule.tokens:
            if token.op in ("==", "!="):
                continue
            if token.key == "GOTO":
                index = next(i for i, r in enumerate(rules)
                             if any(t.key == "LABEL" and t.value == token.value
                                    for t in r.tokens))
                break
            if token.key == "IMPORT" and token.attr == "program":
                command = _substitute(token.value, props)
                imported.append(command)
                code, out = run_program(shlex.split(command), dict(props))
                if code == 0:
                    for line in out.splitlines():
                        if "=" in line:
                            key, value = line.split("=", 1)
                            props[key] = value
            elif token.key == "ENV":
                props[token.attr or ""] = _substitute(token.value, props)
            elif token.key == "RUN":
                run.append(_substitute(token.value, props))
    return EventResult(tuple(imported), props, tuple(run))
