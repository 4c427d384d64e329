"""On-disk data specs (atomistic HDF5), label extraction, splits."""
