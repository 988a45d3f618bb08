"""Addressbooks learnt from outbound mail (``[addressbook] learn``).

An outbound message (SMTP AUTH, or a client in ``[policy] trusted_networks``)
tells who the local sender writes to: each recipient becomes an entry in the
addressbook of the envelope sender, source ``learned``, with an expiry of
``learn_expiry`` from the last send. A reply from that correspondent over IPv6
then meets the addressbook rule of whitelist.py like any primed entry.

``teaches`` (pure) applies the guards; ``AddressbookLearner`` queues what a
message teaches and writes it in batches from a background thread, so Redis
down or slow never touches the outbound message. The envelope sender, not the
From header, is the user: it is what the MTA checked against the login
(Postfix's ``smtpd_sender_login_maps``).
"""
from __future__ import annotations

import time

from ..addresses import AddressError, domain_of, normalise_address
from .background import BackgroundQueue

SOURCE = "learned"
MAX_PENDING = 10_000       # messages waiting to be written; beyond, not learnt (counted)
BATCH = 200                # messages per Redis pipeline


def teaches(section, mail_from: str, recipients) -> tuple:
    """(user, correspondents) normalised, or ("", reason) when the message teaches nothing."""
    if not mail_from:
        return "", "null sender"
    if len(recipients) > section.learn_max_recipients:
        return "", f"{len(recipients)} recipients > learn_max_recipients"
    try:
        user = normalise_address(mail_from, section.fold_local_part)
    except AddressError:
        return "", "unparseable sender"
    if section.local_domains and domain_of(user) not in section.local_domains:
        return "", "sender outside local_domains"
    correspondents = set()
    for rcpt in recipients:
        try:
            correspondents.add(normalise_address(rcpt, section.fold_local_part))
        except AddressError:
            continue
    correspondents.discard(user)
    if not correspondents:
        return "", "no usable recipient"
    return user, tuple(sorted(correspondents))


class AddressbookLearner(BackgroundQueue):
    """Queues (user, correspondents) and writes them, many messages a round trip."""
    what = "addressbook learning"
    redis_warning = "{what}: Redis: {error} ({failed} messages not learnt so far)"

    def __init__(self, store, section, clock=time.time, idle_seconds: float = 10.0):
        super().__init__(MAX_PENDING, batch_size=BATCH, idle_seconds=idle_seconds)
        self.store = store
        self.section = section
        self.clock = clock
        self.learnt = 0           # messages whose pairs were written
        self.evicted = 0          # correspondents evicted by the per-user cap

    def submit_message(self, mail_from: str, recipients) -> str:
        """Queue what a message teaches; returns "" or why it teaches nothing. Never raises."""
        user, correspondents = teaches(self.section, mail_from, recipients)
        if not user:
            return correspondents
        if not self.submit((user, correspondents)):
            return "queue full"
        return ""

    def handle(self, items: list) -> None:
        books: dict = {}
        for user, correspondents in items:     # keyed hashes computed here, off the SMTP path
            ids = books.setdefault(self.store.addressbook_id(user), set())
            ids.update(self.store.addressbook_id(c) for c in correspondents)
        ttl = self.section.learn_expiry
        # Redis down: background.py counts the batch failed and pauses.
        self.evicted += self.store.learn_addressbooks(
            SOURCE, {user: sorted(ids) for user, ids in books.items()},
            int(self.clock()) + ttl, ttl, self.section.learn_max_entries)
        self.learnt += len(items)
