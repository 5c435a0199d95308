"""`python -m cli ...` is `neurflow ...`."""

import sys

from cli.main import main

sys.exit(main())
