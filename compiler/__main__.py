import sys

from lwc.cli import main

sys.exit(main())
