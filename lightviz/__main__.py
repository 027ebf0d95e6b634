import sys

from lightviz.cli import main

sys.exit(main())
