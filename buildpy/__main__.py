import sys

from buildpy.cli import main

sys.exit(main())
