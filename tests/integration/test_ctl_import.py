"""mx6ctl import and export, and the atomic replace, against a real redis-server."""
import ipaddress
import json
import os
import pty
import subprocess
import sys
import threading
import time

import pytest
import redis

from mx6milter.config import load_config
from mx6milter.ctl.common import open_store
from mx6milter.store import Store
from mx6milter.prefixes import ip_field

from ctl_runner import Ctl

SECRET = b"another-test-secret-16+bytes"


@pytest.fixture
def ctl(tmp_path, redis_url):
    return Ctl(tmp_path, redis_url)


def raw(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def summary(run) -> dict:
    return json.loads(run.out.strip().splitlines()[-1])


def prefixes(start: int, count: int) -> list:
    base = int(ipaddress.IPv6Address("2001:db8::"))
    return [str(ipaddress.IPv6Network((base + ((start + i) << 64), 64))) for i in range(count)]


# --- lines, bad lines, --strict -------------------------------------------------------------


IP_FILE = """# partner feed
2001:db8:1::/48
2001:db8:2::/48 expires=2030-01-01   # until the contract ends

10.0.0.0/8
2001:db8:3::1/48
2001:db8:4::/48 colour=blue
2001:db8:1::/48
"""


def test_import_skips_bad_lines_with_their_numbers(ctl, redis_url):
    path = ctl.file("feed.txt", IP_FILE.encode() + b"\xff\xfe bad bytes\n")
    result = ctl("import", "ip", path, "--source", "feed")
    assert result.rc == 2          # bad lines: said, counted, skipped, and the exit status says so
    assert summary(result) == {"kind": "ip", "source": "feed", "file": str(path), "format": "lines",
                               "replace": False, "added": 2, "present": 1, "repeated": 0,
                               "removed": 0, "rejected": 4, "written": True}
    errors = result.err.splitlines()
    assert errors[0].startswith(f"{path}:5: '10.0.0.0/8': an IPv4") and errors[0].endswith("; skipped")
    assert errors[1].startswith(f"{path}:6: '2001:db8:3::1/48': host bits set")
    assert errors[2].startswith(f"{path}:7: unknown option colour=")
    assert errors[3] == f"{path}:9: not valid UTF-8; skipped"
    assert errors[4:] == [f"mx6ctl: {path}: 4 bad lines skipped, the others loaded "
                          "(--allow-rejects: exit 0 all the same)"]
    assert raw(redis_url).hlen("mx6:v1:ip:feed") == 2
    again = ctl("import", "ip", path, "--source", "feed", "--allow-rejects")
    assert again.rc == 0 and summary(again)["rejected"] == 4 and "4 bad lines" in again.err
    assert raw(redis_url).hget("mx6:v1:ip:feed", ip_field(ipaddress.IPv6Network("2001:db8:2::/48"))) \
        == "1893456000"


def test_strict_refuses_the_whole_file(ctl, redis_url):
    path = ctl.file("feed.txt", IP_FILE)
    result = ctl("import", "ip", path, "--strict")
    assert result.rc == 2
    assert "3 bad lines; nothing written (--strict)" in result.err
    assert summary(result)["written"] is False and summary(result)["rejected"] == 3
    assert "skipped" not in result.err
    assert raw(redis_url).keys("mx6:*") == []
    good = ctl.file("good.txt", "2001:db8:1::/48\n2001:db8:2::/48\n")
    assert ctl("import", "ip", good, "--strict").rc == 0
    assert raw(redis_url).hlen("mx6:v1:ip:local") == 2


def test_many_bad_lines_are_counted_not_all_printed(ctl):
    path = ctl.file("bad.txt", "nonsense\n" * 250)
    result = ctl("import", "ip", path)
    assert summary(result)["rejected"] == 250
    assert result.err.count("; skipped") == 100
    assert "150 more bad lines not shown" in result.err


@pytest.mark.parametrize("argv, words", [
    (["import", "ip", "/nonexistent/list.txt"], "cannot read"),
    (["import", "ip", "/"], "is a directory"),
    (["import", "ip", "FILE", "--format", "csv"], "for addressbook imports"),
    (["import", "ip", "FILE", "--require", "dkim"], "--require is for domain imports"),
    (["import", "ip", "FILE", "--recipient", "u@example.org"], "does not apply to import ip"),
    (["import", "ip", "FILE", "--allow-empty"], "only means something with --replace"),
    (["import", "addressbook", "FILE", "--format", "vcard"], "give --recipient"),
    (["import", "addressbook", "FILE", "--recipient", "u@example.org"], "for vCard files"),
    (["import", "ip", "FILE", "--expires", "yesterday"], "expected never"),
    (["export", "ip", "--format", "csv"], "for addressbook exports"),
    (["export", "ip", "-o", "/nonexistent/dir/out.txt"], "cannot write"),
    (["export", "ip", "-o", "/tmp"], "/tmp: is a directory"),
])
def test_import_usage_errors(ctl, redis_url, argv, words):
    path = ctl.file("list.txt", "2001:db8::/48\n")
    result = ctl(*[str(path) if a == "FILE" else a for a in argv])
    assert result.rc == 2 and words in result.err
    assert raw(redis_url).keys("mx6:v1:ip:*") == []


def test_domain_import_with_requirements_and_notes(ctl, redis_url):
    path = ctl.file("domains.txt", "partner.example\nBücher.example. require=dkim\ncom\n")
    result = ctl("import", "domain", path, "--require", "any")
    assert summary(result)["added"] == 2 and summary(result)["rejected"] == 1
    assert f"{path}:2: note: 'Bücher.example.' stored as 'xn--bcher-kva.example'" in result.err
    assert f"{path}:3: 'com': a public suffix" in result.err
    assert raw(redis_url).hgetall("mx6:v1:domain:local") == {
        "partner.example": "any 0", "xn--bcher-kva.example": "dkim 0"}


# --- addressbooks: lines, CSV, vCard ----------------------------------------------------------


def test_addressbook_from_csv_with_header_and_expiry(ctl, redis_url):
    path = ctl.file("book.csv", "recipient,sender,expires\n"
                                "User@Example.org, friend@partner.example ,\n"
                                "user@example.org,\"o'brien@partner.example\",2030-01-01\n"
                                "# a comment\n"
                                "user@example.org\n"
                                "other@example.org,nobody\n")
    result = ctl("import", "addressbook", path)
    assert summary(result)["format"] == "csv"
    assert summary(result)["added"] == 2 and summary(result)["rejected"] == 2
    assert f"{path}:5: expected recipient,sender[,expires], got 1 columns" in result.err
    assert f"{path}:6: 'nobody': expected local-part@domain" in result.err
    assert raw(redis_url).hgetall("mx6:v1:ab:local:user@example.org") == {
        "friend@partner.example": "0", "o'brien@partner.example": "1893456000"}


VCARDS = """BEGIN:VCARD
VERSION:3.0
FN:Friend
EMAIL;TYPE=INTERNET:Friend@Partner.example
item2.EMAIL:
 second@partner.example
END:VCARD
BEGIN:VCARD
VERSION:3.0
EMAIL:not-an-address
END:VCARD
BEGIN:VCARD
EMAIL:truncated@partner.example
"""


def test_addressbook_from_vcard(ctl, redis_url):
    path = ctl.file("contacts.vcf", VCARDS)
    result = ctl("import", "addressbook", path, "--recipient", "User@Example.org",
                 "--expires", "2030-01-01")
    assert summary(result)["format"] == "vcard"
    assert summary(result)["added"] == 2 and summary(result)["rejected"] == 2
    assert f"{path}:10: 'not-an-address'" in result.err
    assert f"{path}:12: BEGIN:VCARD without END:VCARD" in result.err
    assert raw(redis_url).hgetall("mx6:v1:ab:local:user@example.org") == {
        "friend@partner.example": "1893456000", "second@partner.example": "1893456000"}


def test_vcard_detected_by_content_and_read_from_stdin(ctl, redis_url):
    result = ctl.process("import", "addressbook", "-", "--recipient", "user@example.org",
                         "--allow-rejects", input=VCARDS.encode())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "vcard"
    assert raw(redis_url).hlen("mx6:v1:ab:local:user@example.org") == 2


def test_lines_ended_by_a_lone_cr_read_as_from_standard_input(ctl, redis_url):
    """Excel's "CSV (Macintosh)" ends lines with CR alone: a file reads as stdin does."""
    book = b"recipient,sender\ruser@example.org,a@partner.example\ruser@example.org,b@partner.example\r"
    path = ctl.file("mac.csv", book)
    result = ctl("import", "addressbook", path, "--source", "file")
    assert (summary(result)["added"], summary(result)["rejected"]) == (2, 0), result.err
    piped = ctl.process("import", "addressbook", "-", "--format", "csv", "--source", "pipe",
                        input=book)
    assert json.loads(piped.stdout)["added"] == 2, piped.stderr
    ips = ctl.file("mac.txt", b"2001:db8:1::/48\r\r2001:db8:2::/48 expires=2030-01-01\r\n2001:db8:3::/48")
    result = ctl("import", "ip", ips)
    assert (summary(result)["added"], summary(result)["rejected"]) == (3, 0), result.err


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff"])
def test_a_utf16_file_is_refused_with_the_reason(ctl, redis_url, bom):
    codec = "utf-16-le" if bom == b"\xff\xfe" else "utf-16-be"
    path = ctl.file("contacts.vcf", bom + VCARDS.encode(codec))
    result = ctl("import", "addressbook", path, "--recipient", "user@example.org")
    assert result.rc == 2 and result.out == ""
    assert result.err == f"mx6ctl: {path}: UTF-16 text; mx6ctl reads UTF-8 " \
                         "(convert it: iconv -f UTF-16 -t UTF-8)\n"
    piped = ctl.process("import", "ip", "-", input=bom + "2001:db8::/48\n".encode(codec))
    assert piped.returncode == 2 and b"UTF-16 text" in piped.stderr
    assert raw(redis_url).keys("mx6:v1:*") == []


# --- export round trips ----------------------------------------------------------------------


def test_export_import_round_trip_every_kind(ctl, redis_url, tmp_path):
    ctl("ip", "add", "2001:db8:1::/48", "2001:db8::25", "--source", "a")
    ctl("ip", "add", "2001:db8:2::/47", "--source", "a", "--expires", "2030-01-01")
    ctl("domain", "add", "partner.example", "--source", "a", "--require", "spf")
    ctl("domain", "add", "bücher.example", "--source", "a", "--expires", "2031-06-01T12:00:00Z")
    ctl("addressbook", "add", "user@example.org", "x@partner.example", "y@partner.example",
        "--source", "a")
    ctl("addressbook", "add", "other@example.org", "z@partner.example", "--source", "a",
        "--expires", "2030-01-01")
    client = raw(redis_url)
    for kind, name in (("ip", "ip"), ("domain", "domain"), ("addressbook", "ab")):
        for fmt in (["lines", "csv"] if kind == "addressbook" else ["lines"]):
            out = tmp_path / f"{kind}.{fmt}"
            exported = ctl("export", kind, "--source", "a", "--format", fmt, "-o", out)
            assert exported.rc == 0
            imported = ctl("import", kind, out, "--source", "b", "--format", fmt, "--replace",
                           "--strict")
            assert imported.rc == 0, imported.err
            assert summary(imported)["rejected"] == 0
            assert contents(client, name, "b") == contents(client, name, "a") != {}, (kind, fmt)


def contents(client, kind, source) -> dict:
    """A source's hashes by key suffix, so two sources compare."""
    base = f"mx6:v1:{kind}:{source}"
    keys = [base] + client.keys(base + ":*")
    return {key[len(base):]: client.hgetall(key) for key in keys if client.exists(key)}


def test_export_leaves_out_expired_entries(ctl, redis_url):
    client = raw(redis_url)
    client.sadd("mx6:v1:ip:sources", "local")
    client.hset("mx6:v1:ip:local", mapping={ip_field(ipaddress.IPv6Network("2001:db8:1::/48")): "1000",
                                            ip_field(ipaddress.IPv6Network("2001:db8:2::/48")): "0"})
    result = ctl("export", "ip")
    assert result.out.splitlines()[1:] == ["2001:db8:2::/48"]
    assert "exported 1 entries, left out 1 expired" in result.err


def test_privacy_mode_export_round_trips_as_hashes(tmp_path, redis_url):
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    private = Ctl(tmp_path, redis_url, extra=f"[addressbook]\nsecret_file = {secret}\n")
    private("addressbook", "add", "user@example.org", "x@partner.example", "--source", "a")
    exported = private("export", "addressbook", "--source", "a")
    assert "@" not in "".join(exported.out.splitlines()[2:])
    assert "privacy mode" in exported.out
    path = private.file("hashed.txt", exported.out)
    assert private("import", "addressbook", path, "--source", "b", "--strict").rc == 0
    client = raw(redis_url)
    [key_a] = client.keys("mx6:v1:ab:a:*")
    [key_b] = client.keys("mx6:v1:ab:b:*")
    assert key_a.split(":")[-1] == key_b.split(":")[-1]
    assert client.hgetall(key_a) == client.hgetall(key_b)
    # without the secret, hashes cannot be imported
    (tmp_path / "plain").mkdir()
    plain = Ctl(tmp_path / "plain", redis_url)
    refused = plain("import", "addressbook", path, "--source", "c")
    assert summary(refused)["rejected"] == 1 and "no [addressbook] secret_file" in refused.err


# --- --replace ------------------------------------------------------------------------------


def test_replace_swaps_the_source_and_reports_added_removed(ctl, redis_url):
    ctl.file("old.txt", "\n".join(prefixes(0, 10)))
    ctl.file("new.txt", "\n".join(prefixes(5, 10)))
    ctl("ip", "add", prefixes(100, 1)[0], "--source", "other")
    assert summary(ctl("import", "ip", ctl.directory / "old.txt", "--source", "feed"))["added"] == 10
    result = ctl("import", "ip", ctl.directory / "new.txt", "--source", "feed", "--replace")
    assert result.rc == 0
    assert {k: summary(result)[k] for k in ("added", "present", "removed")} == \
        {"added": 5, "present": 5, "removed": 5}
    client = raw(redis_url)
    assert client.hlen("mx6:v1:ip:feed") == 10
    assert client.hlen("mx6:v1:ip:other") == 1          # other sources untouched
    assert [k for k in client.keys("*") if "~" in k] == []   # no staging keys left
    assert client.ttl("mx6:v1:ip:feed") == -1           # the staging TTL did not come along


def test_replace_addressbook_drops_recipients_not_in_the_new_file(ctl, redis_url):
    old = "".join(f"r{i}@example.org s{j}@partner.example\n" for i in range(300) for j in range(3))
    new = "".join(f"r{i}@example.org s{j}@partner.example\n" for i in range(200, 400) for j in range(2))
    ctl.file("old.txt", old)
    ctl.file("new.txt", new)
    ctl("import", "addressbook", ctl.directory / "old.txt", "--source", "crm")
    result = ctl("import", "addressbook", ctl.directory / "new.txt", "--source", "crm", "--replace")
    assert {k: summary(result)[k] for k in ("added", "present", "removed")} == \
        {"added": 200, "present": 200, "removed": 700}
    client = raw(redis_url)
    keys = client.keys("mx6:v1:ab:crm:*")
    assert len(keys) == 200
    assert not client.exists("mx6:v1:ab:crm:r0@example.org")
    assert client.hgetall("mx6:v1:ab:crm:r250@example.org") == {
        "s0@partner.example": "0", "s1@partner.example": "0"}
    assert [k for k in client.keys("*") if "~" in k] == []


def test_replace_with_an_empty_file_is_refused_unless_allowed(ctl, redis_url):
    ctl("ip", "add", "2001:db8:1::/48", "--source", "feed")
    empty = ctl.file("empty.txt", "# the download failed\n")
    result = ctl("import", "ip", empty, "--source", "feed", "--replace")
    assert result.rc == 2 and "refusing to replace source feed with an empty list" in result.err
    assert raw(redis_url).hlen("mx6:v1:ip:feed") == 1
    allowed = ctl("import", "ip", empty, "--source", "feed", "--replace", "--allow-empty")
    assert allowed.rc == 0 and summary(allowed)["removed"] == 1
    assert raw(redis_url).exists("mx6:v1:ip:feed") == 0


def store_for(ctl) -> Store:
    return open_store(load_config(str(ctl.config)))


def test_failed_load_leaves_the_list_and_no_staging_keys(ctl, redis_url):
    store = store_for(ctl)
    store.load("ab", "crm", [("r@example.org", "old@partner.example", "0")])

    def entries():
        for i in range(2500):
            yield f"r{i % 7}@example.org", f"s{i}@partner.example", "0"
        raise RuntimeError("feed broke off")

    with pytest.raises(RuntimeError):
        store.load("ab", "crm", entries(), replace=True)
    client = raw(redis_url)
    assert client.keys("mx6:v1:ab:crm:*") == ["mx6:v1:ab:crm:r@example.org"]
    assert [k for k in client.keys("*") if "~" in k] == []


def test_swap_aborts_untouched_if_a_staging_key_vanished(ctl, redis_url, monkeypatch):
    store = store_for(ctl)
    store.load("ab", "crm", [("r@example.org", "old@partner.example", "0")])
    swap = store._swap

    def sabotaged(kind, source, staging, suffixes):
        raw(redis_url).delete(f"{staging}:r1@example.org")   # e.g. its TTL ran out
        return swap(kind, source, staging, suffixes)

    monkeypatch.setattr(store, "_swap", sabotaged)
    with pytest.raises(redis.exceptions.ResponseError, match="list unchanged"):
        store.load("ab", "crm", [(f"r{i}@example.org", "new@partner.example", "0")
                                 for i in range(3)], replace=True)
    client = raw(redis_url)
    assert client.keys("mx6:v1:ab:crm:*") == ["mx6:v1:ab:crm:r@example.org"]
    assert client.hgetall("mx6:v1:ab:crm:r@example.org") == {"old@partner.example": "0"}


# --- the atomicity proof: a reader during a replace ------------------------------------------


def slow(entries, every=100, pause=0.02):
    """Feed the load slowly, so the reader gets many looks while it runs."""
    for i, entry in enumerate(entries):
        if i % every == 0:
            time.sleep(pause)
        yield entry


class Reader(threading.Thread):
    """Looks the whole lists up the way the milter does (Store.lookup), over and over.

    Every answer must be exactly the old list or exactly the new one.
    """

    def __init__(self, store, kind, queries, old, new):
        super().__init__(daemon=True)
        self.store, self.kind, self.queries = store, kind, queries
        self.old, self.new = old, new
        self.stop = threading.Event()
        self.seen = []          # "old", "new" or the bad answer's size
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                hits = self.store.lookup({self.kind: self.queries})[self.kind]
                got = {(h.key, h.field) for h in hits}
                self.seen.append("old" if got == self.old else "new" if got == self.new
                                 else f"bad:{len(got & self.old)}old+{len(got & self.new)}new")
        except Exception as err:   # reported by the test
            self.error = err


def run_reader(store, kind, queries, old, new, replace):
    reader = Reader(store, kind, queries, old, new)
    reader.start()
    while not reader.seen:
        time.sleep(0.001)
    replace()
    # Two more looks: the second began after the swap (a loaded machine is slow to them).
    looks, deadline = len(reader.seen), time.monotonic() + 10
    while len(reader.seen) < looks + 2 and time.monotonic() < deadline and reader.is_alive():
        time.sleep(0.01)
    reader.stop.set()
    reader.join(10)
    assert reader.error is None
    print(f"reader: {len(reader.seen)} looks, {reader.seen.count('old')} at the old list")
    return reader.seen


def ab_sets(offset):
    pairs = [(f"r{i}@example.org", f"s{j + offset}@partner.example") for i in range(100)
             for j in range(20)]
    return pairs, set(pairs)


@pytest.mark.parametrize("kind", ["ip", "ab"])
def test_replace_is_atomic_for_a_concurrent_reader(ctl, kind):
    writer, reader_store = store_for(ctl), store_for(ctl)
    if kind == "ip":
        old_fields = [ip_field(ipaddress.IPv6Network(p)) for p in prefixes(0, 2000)]
        new_fields = [ip_field(ipaddress.IPv6Network(p)) for p in prefixes(1500, 3000)]
        old_pairs, new_pairs = [("", f) for f in old_fields], [("", f) for f in new_fields]
    else:
        old_pairs, _ = ab_sets(0)
        new_pairs, _ = ab_sets(10)       # half the senders change, the recipients stay
    writer.load(kind, "feed", [(s, f, "0") for s, f in old_pairs])
    queries = sorted(set(old_pairs) | set(new_pairs))
    seen = run_reader(reader_store, kind, queries, set(old_pairs), set(new_pairs),
                      lambda: writer.load(kind, "feed", slow((s, f, "0") for s, f in new_pairs),
                                          replace=True, batch=100, window=1))
    bad = [s for s in seen if s not in ("old", "new")]
    assert bad == [], bad[:5]
    assert seen.count("old") >= 10, "the reader did not overlap the load"
    assert seen[-1] == "new"
    assert seen == sorted(seen, key=lambda s: s == "new")   # old, old, ..., new, new: never back


def test_the_reader_does_catch_a_non_atomic_replace(ctl):
    """Control: the same reader sees the gap when a list is emptied and refilled."""
    store, reader_store = store_for(ctl), store_for(ctl)
    old_pairs, old = ab_sets(0)
    new_pairs, new = ab_sets(10)
    store.load("ab", "feed", [(s, f, "0") for s, f in old_pairs])

    def naive_replace():
        store.remove_keys("ab", "feed", sorted({r for r, _ in old_pairs}))
        store.load("ab", "feed", slow((s, f, "0") for s, f in new_pairs), batch=100, window=1)

    seen = run_reader(reader_store, "ab", sorted(old | new), old, new, naive_replace)
    assert any(s.startswith("bad:") for s in seen)


# --- the progress bar on a terminal ----------------------------------------------------------


def import_on_a_terminal(ctl, path) -> tuple:
    """(the finished process, what its standard error wrote to a pseudo-terminal)."""
    master, slave = pty.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "mx6milter.ctl", "-c", str(ctl.config),
                                  "import", "ip", str(path)], stdout=subprocess.PIPE,
                                 stderr=slave, timeout=60)
        os.close(slave)
        slave = None
        tty_text = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            tty_text += chunk
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    return process, tty_text


def test_progress_bar_on_a_terminal_only(ctl):
    path = ctl.file("feed.txt", "\n".join(prefixes(0, 3000)) + "\n")
    process, tty_text = import_on_a_terminal(ctl, path)
    assert process.returncode == 0
    assert b"import ip:" in tty_text and b"100%|" in tty_text       # tqdm's bar
    assert json.loads(process.stdout)["added"] == 3000
    piped = ctl.process("import", "ip", path)
    assert piped.returncode == 0 and b"[" not in piped.stderr and piped.stderr == b""


def test_bad_lines_stand_on_their_own_lines_above_the_bar(ctl):
    lines = prefixes(0, 3000)
    lines[999], lines[1999] = "bad-one", "bad-two"
    path = ctl.file("feed.txt", "\n".join(lines) + "\n")
    process, tty_text = import_on_a_terminal(ctl, path)
    assert process.returncode == 2
    screen = [row.split(b"\r")[-1] for row in tty_text.split(b"\r\n")]   # what stays visible
    errors = [row.decode() for row in screen if str(path).encode() in row]
    assert len(errors) == 3
    for error, where in zip(errors, ("1000: 'bad-one'", "2000: 'bad-two'")):
        assert error.startswith(f"{path}:{where}: not an IPv6 address") and error.endswith("; skipped")
    assert errors[2].endswith("2 bad lines skipped, the others loaded (--allow-rejects: exit 0 all "
                              "the same)")
    assert any(row.startswith(b"import ip: 100%|") for row in screen)
