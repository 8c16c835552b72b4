import sys

from app.training.process import main

sys.exit(main(sys.argv[1:]))
