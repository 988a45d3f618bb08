"""What every mx6ctl verb shares: the config, the store, errors, common options."""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time

from ..config import Config, load_config
from ..entries import AddressIds, EntryError, check_source, parse_expiry
from .. import service
from ..store import Store

COMMAND_TIMEOUT = 120.0   # bulk writes and scans; the milter keeps [redis] timeout


class UsageError(Exception):
    """Bad input from the operator: exit code 2 with the message."""


class VerbParser(argparse.ArgumentParser):
    """The parser of one verb: ``sub.add_parser(NAME, ..., examples=[...])``.

    ``--help`` ends with the examples, one command line each (the unit test
    test_ctl_cli_units walks every verb and holds it to one or two, and to a
    help text for every argument).
    """

    def __init__(self, *args, examples=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.examples = tuple(examples)

    def format_help(self) -> str:
        text = super().format_help()
        if self.examples:
            text += "\nexamples:\n" + "".join(f"  {line}\n" for line in self.examples)
        return text


class _Kept(logging.Handler):
    def __init__(self, records: list):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_log():
    """The library's log records (logger ``mx6milter``) of the block, kept in a list rather
    than printed by logging's last-resort handler, so the verb reports them in its words."""
    records: list = []
    logger = logging.getLogger("mx6milter")
    handler, propagate = _Kept(records), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def load(args) -> Config:
    return load_config(args.config)


def open_store(config: Config) -> Store:
    return service.open_store(config, command_timeout=COMMAND_TIMEOUT)


def address_ids(config: Config, store: Store) -> AddressIds:
    return AddressIds(store.addressbook_id, config.addressbook.fold_local_part,
                      store.addressbook_secret is not None)


def public_suffix_test(args):
    """is_public(domain), from the Public Suffix List the milter's DMARC code uses
    ([policy] psl_file of the configuration)."""
    from ..evidence.auth import load_public_suffix_list
    config = load(args)
    return load_public_suffix_list(config.policy.psl_file, config.where("policy", "psl_file")).is_public


def source_name(text: str) -> str:
    """argparse type for --source."""
    try:
        return check_source(text)
    except EntryError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_source_option(parser, what: str) -> None:
    parser.add_argument("--source", type=source_name, default=None, metavar="NAME",
                        help=what)


def add_expires_option(parser) -> None:
    parser.add_argument("--expires", default="never", metavar="WHEN",
                        help="expiry of the entries: never (default), Unix seconds, a duration "
                             "such as 90d or 12h, or a UTC date such as 2027-01-31")


def now() -> float:
    return time.time()


def parse_expires(text: str) -> int:
    """--expires as entries.parse_expiry reads it; a bad one is a usage error."""
    try:
        return parse_expiry(text, now())
    except EntryError as err:
        raise UsageError(str(err)) from None


def parse_all(texts, parse) -> list:
    """Every input checked before anything is written; all the bad ones named."""
    out, errors = [], []
    for text in texts:
        try:
            out.append(parse(text))
        except EntryError as err:
            errors.append(str(err))
    if errors:
        raise UsageError("\n".join(errors) if len(errors) == 1 else
                         f"{len(errors)} bad entries, nothing written:\n  " + "\n  ".join(errors))
    return out


def note(message: str) -> None:
    print(f"mx6ctl: note: {message}", file=sys.stderr)


MAX_MESSAGE_FILE = 64 << 20     # a message file larger than this is refused, not loaded


def read_message_file(path: str) -> bytes:
    """MESSAGE_FILE ('-' for standard input), at most MAX_MESSAGE_FILE bytes."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_MESSAGE_FILE + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_MESSAGE_FILE + 1)
    except OSError as err:
        raise UsageError(f"{path}: cannot read the message: {err.strerror or err}") from None
    if len(data) > MAX_MESSAGE_FILE:
        raise UsageError(f"{path}: larger than {MAX_MESSAGE_FILE >> 20} MB")
    return data
