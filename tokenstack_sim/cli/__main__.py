"""`python -m tokenstack_sim.cli` is the same as the `tokenstack` command."""

from tokenstack_sim.cli import main

main()
