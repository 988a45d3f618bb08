"""``python -m mx6milter.ctl``: the same as the mx6ctl command."""
import sys

from . import main

sys.exit(main())
