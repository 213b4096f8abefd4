"""``python -m lensllm`` runs the command line."""

from lensllm.cli import main

main()
