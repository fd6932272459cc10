"""pagedlab memory: the refcounted KV-cache block allocator and block manager (pure Python).

    from memory import BlockAllocator, BlockManager, AllocStatus, NoFreeBlocksError
"""
from memory.block_allocator import BlockAllocator, NoFreeBlocksError
from memory.block_manager import AllocStatus, BlockManager
from memory.invariants import InvariantError

__all__ = ["AllocStatus", "BlockAllocator", "BlockManager", "InvariantError", "NoFreeBlocksError"]
