"""`make data`: provide Fashion-MNIST under data/ (or $D2L_DATA_DIR) and check it."""

import sys

from d2l_local.data import main

if __name__ == "__main__":
    sys.exit(main())
