"""``python -m app.cli``: the same as the ``buildkite-controller`` command."""

import sys

from app.cli import main

sys.exit(main())
