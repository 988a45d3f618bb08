"""What an outbound message teaches (evidence/learned.teaches): the guards, no I/O."""
from hypothesis import given, settings
from hypothesis import strategies as st

from mx6milter.config import parse_config
from mx6milter.evidence.learned import teaches


def section(text=""):
    return parse_config("[addressbook]\nlearn = yes\n" + text).addressbook


def test_each_recipient_becomes_a_correspondent_of_the_sender():
    assert teaches(section(), "Alice@Example.ORG", ["Bob@Partner.example", "carol@bücher.example"]) \
        == ("alice@example.org", ("bob@partner.example", "carol@xn--bcher-kva.example"))


def test_the_sender_itself_and_unparseable_recipients_are_left_out():
    assert teaches(section(), "alice@example.org", ["alice@example.org", "not an address",
                                                    "bob@partner.example"]) \
        == ("alice@example.org", ("bob@partner.example",))
    assert teaches(section(), "alice@example.org", ["alice@example.org"]) == \
        ("", "no usable recipient")


def test_a_blast_teaches_nothing():
    rcpts = [f"r{n}@partner.example" for n in range(51)]
    assert teaches(section(), "alice@example.org", rcpts) == \
        ("", "51 recipients > learn_max_recipients")
    assert teaches(section(), "alice@example.org", rcpts[:50])[0] == "alice@example.org"
    assert teaches(section("learn_max_recipients = 3\n"), "alice@example.org", rcpts[:4])[0] == ""


def test_null_and_foreign_senders_teach_nothing():
    assert teaches(section(), "", ["bob@partner.example"]) == ("", "null sender")
    local = section("local_domains = example.org, Bücher.example\n")
    assert teaches(local, "alice@other.example", ["bob@partner.example"]) == \
        ("", "sender outside local_domains")
    assert teaches(local, "alice@BÜCHER.example", ["bob@partner.example"])[0] == \
        "alice@xn--bcher-kva.example"
    assert teaches(local, "alice@sub.example.org", ["bob@partner.example"])[0] == ""


def test_local_part_folding_follows_the_addressbook_setting():
    exact = section("fold_local_part = no\n")
    assert teaches(exact, "Alice@example.org", ["Bob@partner.example"]) == \
        ("Alice@example.org", ("Bob@partner.example",))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.lists(st.text(max_size=80), max_size=60))
def test_hostile_envelopes_never_raise(mail_from, recipients):
    user, rest = teaches(section("local_domains = example.org\n"), mail_from, recipients)
    if user:
        assert user.endswith("@example.org") and user not in rest and len(rest) <= 50
    else:
        assert isinstance(rest, str) and rest


def test_learning_is_off_unless_switched_on():
    assert parse_config("").addressbook.learn is False
