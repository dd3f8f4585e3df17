import sys

from api.db.cli import main

sys.exit(main())
