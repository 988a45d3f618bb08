"""python -m mx6milter.ctl: mx6ctl without the installed script (the tests use it)."""
import sys

from . import main

sys.exit(main())
