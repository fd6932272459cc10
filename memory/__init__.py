"""pagedlab memory: the refcounted KV-cache block allocator and block manager (pure Python).

    from memory import BlockAllocator, BlockManager, AllocStatus, NoFreeBlocksError
    from memory import PrefixCachingBlockManager  # + automatic prefix caching
"""
from memory.block_allocator import BlockAllocator, NoFreeBlocksError
from memory.block_manager import AllocStatus, BlockManager
from memory.invariants import InvariantError
from memory.prefix_cache import PrefixCachingBlockManager

__all__ = ["AllocStatus", "BlockAllocator", "BlockManager", "InvariantError", "NoFreeBlocksError",
           "PrefixCachingBlockManager"]
