"""pagedlab: kernels."""
