import sys

from din_fast.train.trainer import main

sys.exit(main())
