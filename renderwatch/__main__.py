import sys

from renderwatch.cli import main

sys.exit(main())
