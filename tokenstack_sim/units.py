"""Unit constants. Names elsewhere carry their unit (`tRCD_ns`, `nRCD`, `bw_GBps`, `energy_pj`)."""

NS_PER_S = 1e9
PS_PER_NS = 1e3
BYTES_PER_GB = 1e9  # decimal GB, as memory bandwidth is quoted (819.2 GB/s per HBM3 stack)
BYTES_PER_GIB = 1 << 30
BYTES_PER_KIB = 1 << 10
BITS_PER_BYTE = 8
PJ_PER_NJ = 1e3
PJ_PER_J = 1e12

