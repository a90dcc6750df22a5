"""`python -m nnc`: the same as the `nnc` command."""

import sys

from nnc.cli import main

sys.exit(main())
