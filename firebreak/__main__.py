import sys

from firebreak.cli import main

sys.exit(main())
