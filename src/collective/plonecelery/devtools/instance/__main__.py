"""``python -m collective.plonecelery.devtools.instance create-site ...``"""

import sys

from .site import main

sys.exit(main())
