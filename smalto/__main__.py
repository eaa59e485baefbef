import sys

from smalto.cli import main

sys.exit(main())
