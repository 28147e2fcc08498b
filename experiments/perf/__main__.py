"""python -m experiments.perf: see experiments/perf/run.py."""

import sys

from experiments.perf.run import main

sys.exit(main())
