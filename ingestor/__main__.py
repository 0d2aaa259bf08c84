"""`python -m ingestor` is the same as the `ingestor` command."""

import sys

from ingestor.service.cli import main

sys.exit(main())
