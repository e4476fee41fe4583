"""``python -m mclstexp`` (and ``torchrun -m mclstexp``) runs the ``mclstexp`` command."""

import sys

from mclstexp.cli.main import main

sys.exit(main())
