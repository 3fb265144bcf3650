"""vmaflags: the Linux VMA THP flag state machine, modelled, proved and checked against kernels."""
