"""pagedlab: memory."""
