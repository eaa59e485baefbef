import sys

from smalto.apps.cli import main

sys.exit(main())
