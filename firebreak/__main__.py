import sys

from firebreak.cli import entry

sys.exit(entry())
