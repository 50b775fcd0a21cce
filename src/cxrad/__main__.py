"""Entry point for ``python -m cxrad``."""

from cxrad.cli import main

main()
