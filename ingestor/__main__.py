"""`python -m ingestor` is the same as the `ingestor` command."""

import sys

from ingestor.cli import main

sys.exit(main())
