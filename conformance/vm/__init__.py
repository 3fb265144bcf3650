"""Conformance inside qemu test VMs booting Debian kernels (see README.md)."""
