import sys

from cvml_core.cli import main

sys.exit(main())
