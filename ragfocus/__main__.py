import sys

from ragfocus.cli import main

sys.exit(main())
