"""``python -m facenet ...`` (also what ``torchrun -m facenet train ...`` runs)."""

import sys

from facenet.cli import main

if __name__ == "__main__":
    sys.exit(main())
