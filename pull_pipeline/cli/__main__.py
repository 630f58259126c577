"""`python -m pull_pipeline.cli`, the same as the installed `pull-pipeline` script."""

import sys

from pull_pipeline.cli import main

sys.exit(main())
