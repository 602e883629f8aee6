"""``python -m headwater.cli``: the ``headwater`` command, for a process that has no
console script at hand (``headwater worker`` starts its workers so)."""

from headwater.cli._main import main

if __name__ == "__main__":  # importing the module (as the packaging check does) runs nothing
    main()
