"""One HBM stack of capacity and PIM dies with its base-die controller, run on the cycle kernel.

`layout` maps tier addresses to banks, `pim` builds all-bank PIM programs (attention), `dma` builds
cross-layer DMA request streams (with inline quantization), `translation` models the base die's
layered address translation, `run` drives the kernel and reports time, throttling and energy, and
`area` gives silicon area for equal-area comparisons.
"""
