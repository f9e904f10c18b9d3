"""``python -m seqbox``."""

import sys

from seqbox.cli import main

sys.exit(main())
