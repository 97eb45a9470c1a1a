"""``python -m ops``: the ``envios`` command without the installed console script."""

import sys

from ops.cli import main

sys.exit(main())
