"""``python -m es_embed.cli``: the same as the ``es-embed`` script."""

import sys

from es_embed.cli import main

sys.exit(main())
