"""[policy] psl_file: the Public Suffix List from a file (Debian's publicsuffix package by
default, when installed), used by DMARC's organisational domains and by mx6ctl's refusal
of public suffixes; a bad file is a configuration error with file and line."""
from __future__ import annotations

import subprocess

import pytest

from conftest import make_config
from ctl_runner import Ctl
from milterd import MX6MILTER
from mx6milter.config import ConfigError, load_config
from mx6milter.evaluate import Evaluator
from mx6milter.evidence import auth
from mx6milter.dns import Resolver
from mx6milter.store import Store

# A list of our own: the ICANN rules the check needs, and a suffix no real list has.
OWN_LIST = "// test list\ncom\nuk\nco.uk\nexample-suffix.test\n*.wild.test\n"


@pytest.fixture
def own_list(tmp_path):
    path = tmp_path / "psl.dat"
    path.write_text(OWN_LIST)
    return path


def test_the_configured_file_gives_the_organisational_domains(own_list):
    config = make_config(f"[policy]\npsl_file = {own_list}\n")
    evaluator = Evaluator(config, Store.from_config(config.redis), Resolver())
    assert evaluator.dmarc.org_domain("mail.shop.example-suffix.test") == "shop.example-suffix.test"
    assert evaluator.dmarc.org_domain("a.b.x.wild.test") == "b.x.wild.test"
    assert evaluator.dmarc.aligned("shop.example-suffix.test", "bounce.shop.example-suffix.test", "r")
    assert not evaluator.dmarc.aligned("one.example-suffix.test", "two.example-suffix.test", "r")


def test_empty_means_debians_file_if_installed_else_the_modules_copy(own_list, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(auth, "DEBIAN_PSL", str(own_list))
    assert auth.load_public_suffix_list("").is_public("example-suffix.test")
    monkeypatch.setattr(auth, "DEBIAN_PSL", str(tmp_path / "not-installed.dat"))
    bundled = auth.load_public_suffix_list("")
    assert not bundled.is_public("example-suffix.test")
    assert bundled.privatesuffix("www.example.co.uk") == "example.co.uk"


@pytest.mark.parametrize("content, words", [(None, "cannot read: No such file or directory"),
                                            ("localhost\n", "not a Public Suffix List"),
                                            ("x" * (17 << 20), "not a Public Suffix List")])
def test_a_bad_file_is_a_config_error_naming_the_line(tmp_path, content, words):
    psl = tmp_path / "bad.dat"
    if content is not None:
        psl.write_text(content)
    conf = tmp_path / "m.conf"
    conf.write_text(f"[policy]\nmode = report\npsl_file = {psl}\n")
    with pytest.raises(ConfigError) as err:
        config = load_config(str(conf))
        auth.load_public_suffix_list(config.policy.psl_file, config.where("policy", "psl_file"))
    assert str(err.value) == f"{conf}:3: [policy] psl_file = '{psl}': {words}"
    result = subprocess.run([MX6MILTER, "-c", str(conf), "--check-config"], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stderr) == (2, f"mx6milter: {err.value}\n")


def test_mx6ctl_refuses_a_suffix_of_the_configured_list(tmp_path, redis_url, own_list):
    ctl = Ctl(tmp_path, redis_url, extra=f"[policy]\npsl_file = {own_list}\n")
    refused = ctl("domain", "add", "example-suffix.test")
    assert refused.rc == 2 and "public suffix" in refused.err
    accepted = ctl("domain", "add", "shop.example-suffix.test")
    assert accepted.rc == 0, accepted.err
