"""``python -m embedtune``: the command line (what ``torchrun ... -m embedtune train`` runs)."""

from embedtune.cli import main

if __name__ == "__main__":
    main()
