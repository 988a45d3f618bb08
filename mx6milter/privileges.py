"""Running unprivileged: who to become after binding, and the socket's owner.

The daemon starts as root when it must create its socket somewhere only root
may write (``/run``, Postfix's ``/var/spool/postfix``), gives the socket to
``[milter] user`` and ``socket_group`` (the group the MTA runs as), then
switches to that user for good before serving any session.
"""
from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass

from .config import Config, ConfigError

log = logging.getLogger("mx6milter")


@dataclass(frozen=True)
class Identity:
    """The user and groups to run as; uid None means keep the current ones."""
    uid: int | None
    gid: int | None
    user_name: str | None
    socket_gid: int | None


def _user(config: Config) -> pwd.struct_passwd:
    value = config.milter.user
    try:
        return pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except (KeyError, OverflowError):
        raise ConfigError(f"{config.where('milter', 'user')}[milter] user = {value!r}: "
                          "no such user") from None


def _group(config: Config, key: str) -> int:
    value = getattr(config.milter, key)
    try:
        return grp.getgrgid(int(value)).gr_gid if value.isdigit() else grp.getgrnam(value).gr_gid
    except (KeyError, OverflowError):
        raise ConfigError(f"{config.where('milter', key)}[milter] {key} = {value!r}: "
                          "no such group") from None


def check_names(config: Config) -> None:
    """Raise ConfigError, naming file and line, if [milter] user, group or socket_group
    names no account (--check-config)."""
    if config.milter.user:
        _user(config)
    for key in ("group", "socket_group"):
        if getattr(config.milter, key):
            _group(config, key)


def resolve_identity(config: Config) -> Identity:
    """Look the names up now, so a typo stops the start instead of a later switch."""
    section = config.milter
    uid = gid = name = None
    if section.user:
        entry = _user(config)
        uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if section.group:
        gid = _group(config, "group")
        if uid is None:
            uid = os.getuid()   # a group alone: keep the user, change the group
    socket_gid = _group(config, "socket_group") if section.socket_group else gid
    if uid is not None and os.geteuid() != 0 and (uid, gid) != (os.getuid(), os.getgid()):
        raise ConfigError(f"[milter] user/group: switching to uid {uid} gid {gid} needs root; "
                          f"started as uid {os.getuid()}")
    return Identity(uid, gid, name, socket_gid)


def make_socket_dir(path: str, identity: Identity) -> None:
    """Create the socket's directory if missing, owned by the user we become.

    Owning it lets the unprivileged daemon remove its socket on exit; group
    socket_group may enter it (the MTA connects), nobody else.
    """
    directory = os.path.dirname(path) or "."
    if os.path.isdir(directory):
        return
    os.makedirs(directory, exist_ok=True)
    if identity.uid is not None or identity.socket_gid is not None:
        os.chown(directory, -1 if identity.uid is None else identity.uid,
                 -1 if identity.socket_gid is None else identity.socket_gid)
        os.chmod(directory, 0o750)


def own_socket(path: str, mode: int, identity: Identity) -> None:
    os.chmod(path, mode)
    if identity.uid is not None or identity.socket_gid is not None:
        os.chown(path, -1 if identity.uid is None else identity.uid,
                 -1 if identity.socket_gid is None else identity.socket_gid)


def drop_privileges(identity: Identity) -> None:
    """Switch user and groups for good; raise if root could be regained."""
    if identity.uid is None or (identity.uid, identity.gid) == (os.getuid(), os.getgid()):
        return
    if identity.user_name is not None:
        os.initgroups(identity.user_name, identity.gid)   # e.g. membership in postfix
    else:
        os.setgroups([identity.gid])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    if identity.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise RuntimeError("could regain root after switching users; refusing to run")
    log.info("running as uid %d gid %d (groups %s)", os.getuid(), os.getgid(),
             ",".join(str(g) for g in os.getgroups()) or "-")


def warn_if_root() -> None:
    """Called once privileges are dropped: still root means [milter] user is empty."""
    if os.geteuid() == 0:
        log.warning("running as root: set [milter] user (and socket_group) so that the "
                    "daemon drops root once its socket is bound")
