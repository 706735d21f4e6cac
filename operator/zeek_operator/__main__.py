"""`python -m zeek_operator` = `zeek-pipeline operator`."""

import sys

from zeek_operator.cli import main

sys.exit(main())
