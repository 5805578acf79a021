"""``python -m aigc`` (and ``torchrun -m aigc``) run the command line."""
from .cli import main

main()
