"""``python -m cvml_core``: the ``cvml`` command (:mod:`cvml_core.cli`)."""

from cvml_core.cli import main

raise SystemExit(main())
