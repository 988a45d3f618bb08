"""contrib/ for operators, read only: README shows it line for line, and the Postfix
milter config agrees with main.cf and master.cf. Running the files: e2e/test_deploy_docs.py."""
from __future__ import annotations

import re
from pathlib import Path

from mx6milter.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"


SHOWN_DIRS = ("postfix", "sendmail", "systemd")


def readme_snippets() -> dict:
    """Every ``contrib/PATH``:: literal block in README.rst: path -> its text."""
    lines = (ROOT / "README.rst").read_text().split("\n")
    snippets = {}
    for number, line in enumerate(lines):
        m = re.fullmatch(r"``(contrib/[^`]+)``::", line)
        if not m:
            continue
        block = []
        for text in lines[number + 2:]:
            if text and not text.startswith("    "):
                break
            block.append(text[4:])
        while block and not block[-1]:
            block.pop()
        assert m.group(1) not in snippets, f"{m.group(1)} shown twice in README.rst"
        snippets[m.group(1)] = "\n".join(block)
    return snippets


def test_readme_shows_every_deployment_file_line_for_line():
    snippets = readme_snippets()
    files = sorted(str(p.relative_to(ROOT)) for d in SHOWN_DIRS for p in (CONTRIB / d).iterdir()
                   if p.is_file())
    assert sorted(snippets) == files
    for path, text in snippets.items():
        assert text.split("\n") == (ROOT / path).read_text().rstrip("\n").split("\n"), path


def test_readme_sections_follow_quick_start():
    text = (ROOT / "README.rst").read_text()
    titles = re.findall(r"^(\S.*)\n=+\n", text, re.MULTILINE)
    at = titles.index("Quick start")
    assert titles[at + 1:at + 4] == ["Installing", "Deploying with Postfix", "Deploying with Sendmail"]


def test_postfix_milter_config_matches_main_cf_and_master_cf():
    config = parse_config((CONTRIB / "postfix" / "mx6milter.conf").read_text(), "postfix.conf")
    assert config.milter.socket_group == "postfix" and config.milter.socket_mode == 0o660
    main_cf = (CONTRIB / "postfix" / "main.cf").read_text()
    relative = re.search(r"^smtpd_milters = unix:(\S+)$", main_cf, re.MULTILINE).group(1)
    assert config.milter.socket == f"unix:/var/spool/postfix/{relative}"   # the chroot
    master_cf = (CONTRIB / "postfix" / "master.cf").read_text()
    mx6 = re.search(r"smtpd_milters=unix:(\S+)", master_cf.split("[2001:db8::26]")[1]).group(1)
    assert Path(mx6).parent == Path(relative).parent
