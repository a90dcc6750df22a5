"""`python -m nnc`: the same as the `nnc` command."""

import sys

from .cli import main

sys.exit(main())
