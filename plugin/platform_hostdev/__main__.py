"""``python3 -m platform_hostdev`` runs the command line."""
import sys

from platform_hostdev.cli.main import main

sys.exit(main())
