import sys

from bootserverd.cli import main

sys.exit(main())
