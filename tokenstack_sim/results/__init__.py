"""Results: the in-memory run result, its HDF5 file, reports and timelines. Only this layer writes files."""
