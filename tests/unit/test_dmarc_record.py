"""The tolerant DMARC record parser (mx6milter.evidence.dmarc_record): pure."""
import pytest
from hypothesis import given, settings, strategies as st

from mx6milter.evidence.dmarc_record import (POLICIES, DmarcRecord, is_dmarc_record,
                                             parse_record)



# --- the parser -------------------------------------------------------------------------


def test_smallest_record_and_defaults():
    assert parse_record("v=DMARC1; p=reject") == DmarcRecord("reject", "reject")
    record = parse_record(b"v=DMARC1;p=quarantine")
    assert (record.adkim, record.aspf, record.pct, record.problems) == ("r", "r", 100, ())


@pytest.mark.parametrize("text", ["v=dmarc1; p=reject", "V=DMARC1; p=reject", "v=DMARC2; p=reject",
                                  "p=reject; v=DMARC1", "", "   ", ";", "v=spf1 -all",
                                  "v=DMARC1p=reject", "x v=DMARC1; p=reject", "v=DMARC1\\; p=reject"])
def test_a_record_not_starting_with_exactly_v_DMARC1_is_no_record(text):
    record = parse_record(text)
    assert not record.is_dmarc and not record.usable
    assert not is_dmarc_record(text)


@pytest.mark.parametrize("text", ["v=DMARC1", "v=DMARC1;", " v = DMARC1 ; p=none", "v=DMARC1\t;p=none"])
def test_version_tag_with_whitespace_is_a_record(text):
    assert is_dmarc_record(text) and parse_record(text).is_dmarc


@pytest.mark.parametrize("junk", ["fo:0", "rf:afrf", "pct100", "word", "", "sp-none", "1:d:s",
                                  "\u201d", "\ufffd", "newtag=unknown", "P=none", "=x"])
def test_one_malformed_or_unknown_tag_is_ignored_keeping_the_rest(junk):
    record = parse_record(f"v=DMARC1; p=reject; {junk}; adkim=s; aspf=s; pct=50")
    assert (record.policy, record.adkim, record.aspf, record.pct) == ("reject", "s", "s", 50)
    assert len(record.problems) == 1


def test_missing_p_with_a_valid_rua_is_p_none():
    record = parse_record("v=DMARC1; rua=mailto:d@example.com; adkim=s")
    assert (record.policy, record.subdomain_policy, record.adkim) == ("none", "none", "s")
    assert record.rua == ("mailto:d@example.com",)


@pytest.mark.parametrize("text", ["v=DMARC1", "v=DMARC1; p=bogus", "v=DMARC1; p=", "v=DMARC1; pct=100",
                                  "v=DMARC1; p=reject; sp=bogus", "v=DMARC1; p=bogus; rua=not a uri",
                                  "v=DMARC1; p=n"])
def test_invalid_or_missing_p_or_invalid_sp_without_rua_is_unusable(text):
    record = parse_record(text)
    assert record.is_dmarc and not record.usable and record.policy == ""
    assert "unusable" in record.problems[-1]


def test_invalid_p_or_sp_with_a_valid_rua_is_p_none_rfc7489_6_6_3_step_6():
    for text in ("v=DMARC1; p=bogus; rua=mailto:d@example.com",
                 "v=DMARC1; p=reject; sp=bogus; rua=mailto:d@example.com"):
        assert (parse_record(text).policy, parse_record(text).subdomain_policy) == ("none", "none")


def test_sp_defaults_to_p_and_values_are_case_insensitive():
    assert parse_record("v=DMARC1; p=Reject").subdomain_policy == "reject"
    record = parse_record("v=DMARC1; p=REJECT; sp=None; adkim=S; aspf=R")
    assert (record.policy, record.subdomain_policy, record.adkim, record.aspf) == \
        ("reject", "none", "s", "r")


@pytest.mark.parametrize("tag, value, default", [("adkim", "relaxed", "r"), ("aspf", "x", "r"),
                                                 ("pct", "101", 100), ("pct", "-1", 100),
                                                 ("pct", "5.0", 100), ("pct", "", 100)])
def test_a_bad_optional_value_falls_back_to_its_default(tag, value, default):
    record = parse_record(f"v=DMARC1; p=none; {tag}={value}")
    assert record.usable and getattr(record, tag) == default and len(record.problems) == 1


def test_repeated_tag_keeps_the_first():
    record = parse_record("v=DMARC1; p=reject; p=none; v=DMARC1")
    assert record.policy == "reject" and len(record.problems) == 2


def test_report_uris_are_parsed_leniently():
    record = parse_record("v=DMARC1; p=none; rua=mailto:a@example.com!10m, bogus ,"
                          "https://example.com/r; ruf=mailto:f@example.com")
    assert record.rua == ("mailto:a@example.com", "https://example.com/r")
    assert record.ruf == ("mailto:f@example.com",)
    assert len(record.problems) == 1


# --- properties -------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.binary(),
                 st.lists(st.sampled_from(["v=DMARC1", "p=reject", "sp=none", "adkim=s", "pct=5",
                                           "rua=mailto:a@b.c", ";", "=", " ", "x", "\x00", "\u00e9",
                                           "!", ",", "p=", "v=dmarc1"])).map("".join)))
def test_any_input_gives_a_record_or_unusable_never_an_exception(text):
    record = parse_record(text)
    assert isinstance(record, DmarcRecord)
    assert record.usable == (record.policy in POLICIES)
    assert record.is_dmarc or not record.usable
    assert record.subdomain_policy in POLICIES if record.usable else record.subdomain_policy == ""
    assert record.adkim in "rs" and record.aspf in "rs" and 0 <= record.pct <= 100
    assert all(isinstance(p, str) and p for p in record.problems)
    assert is_dmarc_record(text) == record.is_dmarc


def _case_variants(word):
    return st.sampled_from([word, word.upper(), word.capitalize()])


wsp = st.sampled_from(["", " ", "\t", "  "])
uris = st.lists(st.tuples(st.from_regex(r"[a-z0-9.]{1,10}@[a-z]{1,8}\.example", fullmatch=True),
                          st.sampled_from(["", "!10m", "!5", "!1g"])),
                min_size=1, max_size=3)


@st.composite
def valid_records(draw):
    expected = {"policy": draw(st.sampled_from(POLICIES))}
    tags = [("p", draw(_case_variants(expected["policy"])))]
    if draw(st.booleans()):
        expected["subdomain_policy"] = draw(st.sampled_from(POLICIES))
        tags.append(("sp", draw(_case_variants(expected["subdomain_policy"]))))
    for name in ("adkim", "aspf"):
        if draw(st.booleans()):
            expected[name] = draw(st.sampled_from("rs"))
            tags.append((name, draw(_case_variants(expected[name]))))
    if draw(st.booleans()):
        expected["pct"] = draw(st.integers(0, 100))
        tags.append(("pct", str(expected["pct"])))
    for name in ("rua", "ruf"):
        if draw(st.booleans()):
            items = draw(uris)
            expected[name] = tuple(f"mailto:{a}" for a, _ in items)
            tags.append((name, ",".join(f"mailto:{a}{size}" for a, size in items)))
    tags = draw(st.permutations(tags))        # only v= must come first
    text = f"v{draw(wsp)}={draw(wsp)}DMARC1"
    for name, value in tags:
        text += f"{draw(wsp)};{draw(wsp)}{name}{draw(wsp)}={draw(wsp)}{value}"
    text += draw(st.sampled_from(["", ";", " ;", "; "]))
    return text, expected


@settings(max_examples=300, deadline=None)
@given(valid_records())
def test_records_built_from_valid_tags_round_trip(case):
    text, expected = case
    record = parse_record(text)
    assert record.problems == ()
    assert record.policy == expected["policy"]
    assert record.subdomain_policy == expected.get("subdomain_policy", expected["policy"])
    assert (record.adkim, record.aspf) == (expected.get("adkim", "r"), expected.get("aspf", "r"))
    assert record.pct == expected.get("pct", 100)
    assert (record.rua, record.ruf) == (expected.get("rua", ()), expected.get("ruf", ()))


junk_tags = st.one_of(st.text(alphabet=st.characters(blacklist_characters=";="), max_size=12),
                      st.sampled_from(["fo:0", "rf:afrf", "pct100", "newtag=x", "np=reject",
                                       "psd=y", "t=y"]))


@settings(max_examples=300, deadline=None)
@given(valid_records(), st.lists(junk_tags, min_size=1, max_size=3), st.data())
def test_junk_tags_change_nothing_but_the_problems(case, junk, data):
    text, _ = case
    clean = parse_record(text)
    parts = text.rstrip("; ").split(";")
    for item in junk:
        parts.insert(data.draw(st.integers(1, len(parts) - 1)), item)   # not last: ";" may end
    record = parse_record(";".join(parts))
    assert record.problems and record == DmarcRecord(
        clean.policy, clean.subdomain_policy, clean.adkim, clean.aspf, clean.pct, clean.rua,
        clean.ruf, record.problems)


def test_parsed_records_are_kept_by_text_and_bounded():
    from mx6milter.evidence import dmarc_record
    text = "v=DMARC1; p=reject; sp=none; adkim=s; pct=50; rua=mailto:a@example.org; bogus"
    first = parse_record(text)
    assert parse_record(text.encode()) is first                # the same text: kept
    assert parse_record(text + ";") == first and parse_record(text + ";") is not first
    # a record too long to keep is parsed alike, every time
    long_text = text + "; rua=" + ",".join(["mailto:x@example.org"] * 60)
    assert len(long_text) > dmarc_record.MAX_KEPT_RECORD
    assert parse_record(long_text) == parse_record(long_text)
    assert parse_record(long_text) is not parse_record(long_text)
    assert parse_record(long_text).policy == "reject"
    assert "rua= repeated; the first kept" in parse_record(long_text).problems
    assert dmarc_record._parse_kept.cache_info().maxsize == dmarc_record.RECORDS_KEPT
