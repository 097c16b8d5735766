"""``python -m cvml_core``: the ``cvml`` command (:mod:`cvml_core.cli`)."""

import sys

from cvml_core.cli import main

sys.exit(main())
