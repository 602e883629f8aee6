"""``python -m headwater.cli``: the ``headwater`` command, for a process that has no
console script at hand (``headwater worker`` starts its workers so)."""

from headwater.cli._main import main

main()
