"""``python -m lbcore`` is the ``lbcore`` command."""

import sys

from lbcore.cli import main

sys.exit(main())
