"""pagedlab: sim."""
