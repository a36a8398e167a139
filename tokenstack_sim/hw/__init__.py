"""Hardware components: DRAM (cycle level), and later PIM, base die, GPU, links."""
