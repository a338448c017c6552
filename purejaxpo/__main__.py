import sys

from purejaxpo.cli import main

sys.exit(main())
