"""``python3 -m platform_hostdev`` runs the command line."""
import sys

from .cli import main

sys.exit(main())
