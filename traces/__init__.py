"""pagedlab: traces."""
