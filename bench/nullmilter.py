"""The do-nothing pymilter: every stage mx6milter sees, no work; the floor.

Usage: python -m bench.nullmilter SOCKET [--nodelay]   (unix:/PATH or inet:PORT@HOST)
--nodelay sets TCP_NODELAY on a TCP listener, as mx6milter does.
"""
import os
import sys

import Milter


class NullMilter(Milter.Base):
    # The same stages as mx6milter (no "no reply" flags), so only the work differs.
    def connect(self, hostname, family, hostaddr):
        return Milter.CONTINUE

    def hello(self, hostname):
        return Milter.CONTINUE

    def envfrom(self, mail_from, *params):
        return Milter.CONTINUE

    def envrcpt(self, rcpt, *params):
        return Milter.CONTINUE

    def header(self, name, value):
        return Milter.CONTINUE

    def data(self):
        return Milter.CONTINUE

    def eoh(self):
        return Milter.CONTINUE

    def body(self, chunk):
        return Milter.CONTINUE

    def eom(self):
        return Milter.ACCEPT


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.umask(0o000)            # smtpd (user postfix) must reach the unix socket
    Milter.factory = NullMilter
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS)
    if "--nodelay" in argv[1:]:
        # mx6milter's own TCP_NODELAY step, between opening the socket and serving.
        from mx6milter.daemon import set_nodelay_on_listeners
        serve = Milter.milter.main

        def main_with_nodelay():
            set_nodelay_on_listeners()
            serve()
        Milter.milter.main = main_with_nodelay
    Milter.runmilter("nullmilter", argv[0], 600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
