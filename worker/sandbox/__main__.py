"""`python -m worker.sandbox <scratch>/request.json`: one job or inspection in a fresh child."""

import sys

from worker.sandbox.child import main

sys.exit(main(sys.argv))
