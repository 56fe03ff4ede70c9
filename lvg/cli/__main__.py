"""``python -m lvg.cli`` (what ``torchrun ... -m lvg.cli train`` runs): the ``lvg`` command."""

from lvg.cli import main

if __name__ == "__main__":
    main()
