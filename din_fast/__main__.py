import sys

from din_fast.cli import main

sys.exit(main())
