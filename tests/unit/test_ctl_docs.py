"""mx6ctl's documentation against its parser: every verb, import kind and option
that ``mx6ctl --help`` knows is in mx6ctl(1) and README.rst, and the man pages
render without warnings. Pure text checks, plus man(1) for the rendering."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mx6milter.ctl import build_parser

ROOT = Path(__file__).resolve().parents[2]
MAN1 = (ROOT / "man" / "mx6ctl.1").read_text()
README = (ROOT / "README.rst").read_text()


def sub_parsers() -> dict:
    action = next(a for a in build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def roff_plain(text: str) -> str:
    """Roff source as read: escapes of '-' undone, font changes dropped."""
    text = text.replace("\\-", "-").replace("\\e", "\\")
    return re.sub(r"\\f[BIRP]", "", text)


def section(name: str) -> str:
    m = re.search(rf"^\.SH {name}\n(.*?)(?=^\.SH )", MAN1, re.MULTILINE | re.DOTALL)
    assert m, f"mx6ctl.1 has no section {name}"
    return roff_plain(m.group(1))


def test_every_verb_is_in_the_synopsis_and_has_a_subsection():
    synopsis = section("SYNOPSIS")
    headings = [roff_plain(h) for h in re.findall(r"^\.SS (.*)$", MAN1, re.MULTILINE)]
    for verb in sub_parsers():
        assert re.search(rf"^\.B {re.escape(verb)}$", synopsis, re.MULTILINE), f"SYNOPSIS lacks {verb}"
        assert any(h.split()[0] == verb for h in headings), f"no .SS for {verb}"


def test_every_import_kind_is_in_the_synopsis():
    importer = sub_parsers()["import"]
    kinds = next(a for a in importer._actions if a.dest == "kind").choices
    synopsis_kinds = set()
    for line in re.findall(r"^\.B import\n\.BR (.*)$", section("SYNOPSIS"), re.MULTILINE):
        synopsis_kinds |= set(line.split(" | "))
    assert synopsis_kinds == set(kinds)


def test_every_option_is_in_the_man_page():
    text = roff_plain(MAN1)
    for verb, parser in sub_parsers().items():
        for action in parser._actions:
            for option in action.option_strings:
                if option in ("-h", "--help"):
                    continue
                assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), \
                    f"mx6ctl.1 does not mention {verb} {option}"


def test_every_verb_is_in_the_readme():
    for verb in sub_parsers():
        assert re.search(rf"mx6ctl {re.escape(verb)}\b", README), f"README lacks mx6ctl {verb}"


def test_sections_in_order_exit_status_then_see_also_last():
    names = re.findall(r"^\.SH (.*)$", MAN1, re.MULTILINE)
    assert names[:3] == ["NAME", "SYNOPSIS", "DESCRIPTION"]
    assert names[-1] == "SEE ALSO"
    commands = [i for i, n in enumerate(names) if n.endswith("COMMANDS")]
    assert max(commands) < names.index("EXIT STATUS")


@pytest.mark.skipif(shutil.which("man") is None, reason="man(1) not installed")
@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "man").iterdir()))
def test_man_page_renders_without_warnings(page):
    env = dict(os.environ, LC_ALL="C.UTF-8", MANROFFSEQ="", MANWIDTH="80")
    result = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", str(ROOT / "man" / page)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(result.stdout) > 1000
