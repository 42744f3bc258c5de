"""``python -m mlplat``: the ``mlplat`` command."""
from mlplat.cli import main

main()
