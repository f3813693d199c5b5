import sys

from shoal_cli.main import main

sys.exit(main())
