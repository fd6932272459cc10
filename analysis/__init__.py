"""pagedlab: analysis."""
