"""Logging: the decision line, its fields, and where records go.

One decision is one record: ``decision_fields`` are its values; in ``[log] format =
text`` they are written as key=value pairs (``format_kv``: a value with a space, a
quote, a backslash or ``=`` is double-quoted, so logfmt parsers split it right), in
``json`` one JSON object per record. On stderr under systemd (``JOURNAL_STREAM``
names our stderr) every line starts with ``<N>``, the syslog priority journald
reads, and a record's line breaks (a traceback) are written as ``\\n`` so that it
stays one journal entry.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time

from .config import Config
from .evaluate import Outcome
from .model import Session

MAX_VALUE = 200          # characters of one logged value (a hostile HELO is not copied whole)
# logging levels -> syslog priorities (sd-daemon(3): <3> error, <4> warning, <6> info, <7> debug)
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def decision_fields(session: Session, outcome: Outcome) -> dict:
    """The values of one decision's log record, in the order they are written."""
    decision = outcome.decision
    reply = decision.reply or decision.would_reply
    fields = {
        "queue_id": session.queue_id or "-",
        "client": session.client_ip or "-",
        "helo": _clip(session.helo),
        "from": _clip(session.mail_from),
        "rcpts": len(session.recipients),
        "checks": [_clip(str(f)) for f in outcome.evidence.checks],
        "verdict": decision.tier.value,
        "action": decision.action.value,
        "reasons": [_clip(r) for r in decision.reasons],
    }
    if reply:
        fields["reply"] = f"{reply.code}/{reply.status}"
    fields["ms"] = round(outcome.elapsed_ms, 1)
    return fields


def format_decision_log(session: Session, outcome: Outcome) -> str:
    return format_kv(decision_fields(session, outcome))


def format_kv(fields: dict) -> str:
    """key=value pairs for grep and log shippers (client=[IP], from=<ADDRESS>, lists
    comma-separated), each value quoted when it needs to be."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, list):
            value = ",".join(value)
        elif key == "client":
            value = f"[{value}]"
        elif key == "from":
            value = f"<{value}>"
        elif key == "helo":
            value = value or "-"
        parts.append(f"{key}={kv_value(str(value))}")
    return " ".join(parts)


def kv_value(text: str) -> str:
    """TEXT as one logfmt value: control and non-ASCII characters as _, quoted (with \\
    before \\ and ") if it has a space, a quote, a backslash or =, or is empty."""
    text = "".join(ch if " " <= ch <= "~" else "_" for ch in text)
    if text and not any(ch in text for ch in ' "=\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _clip(text: str, limit: int | None = MAX_VALUE) -> str:
    """At most LIMIT characters; bytes that were not UTF-8 (kept as surrogates) as U+FFFD."""
    return text[:limit].encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def priority(levelno: int) -> int:
    for level, number in PRIORITIES:
        if levelno >= level:
            return number
    return 7


class JournalFormatter(logging.Formatter):
    """stderr read by journald: <priority> first, one line per record, no timestamp
    (the journal has its own)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record).replace("\r", "").replace("\n", "\\n")
        return f"<{priority(record.levelno)}>{text}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a decision's fields at the top level ("event": "decision")."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {"time": f"{created}.{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                 "pid": record.process, "logger": record.name}
        fields = getattr(record, "decision", None)
        if fields is not None:
            entry["event"] = "decision"
            entry.update(fields)
        else:
            entry["message"] = _clip(record.getMessage(), None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=DEVICE:INODE when it connects stderr to journald."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(sys.stderr.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


def build_handler(config: Config) -> logging.Handler:
    handler: logging.Handler
    if config.log.destination == "syslog":
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility=config.log.syslog_facility)
        text = "mx6milter[%(process)d]: %(levelname)s %(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        who = "mx6milter[%(process)d]" if config.milter.processes > 1 else "mx6milter"
        text = f"%(asctime)s {who} %(levelname)s %(message)s"   # workers share stderr: say which
    formatter: logging.Formatter = JsonFormatter() if config.log.format == "json" \
        else logging.Formatter(text)
    if config.log.destination == "stderr" and stderr_is_journal():
        if config.log.format == "text":
            formatter = logging.Formatter(text.replace("%(asctime)s ", ""))
        formatter = JournalFormatter(formatter)
    handler.setFormatter(formatter)
    return handler


def setup_logging(config: Config) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(build_handler(config))
    root.setLevel(config.log.level.upper())
    logging.getLogger("mx6milter.dkimpy").setLevel(logging.CRITICAL)   # its errors are our results
