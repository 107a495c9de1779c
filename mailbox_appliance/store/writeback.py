"""Start writing a file's dirty pages to disk early, so that the fsync that follows is short.

An upload's PATCH is acknowledged only once its bytes are fsync'd (design rule 5).  Left to
the kernel, the pages of a 64 MiB PATCH are written back only when that fsync comes, so the
disk idles while the network delivers and the network idles while the disk writes.  Linux's
``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts the writeback of a range without waiting
for it and without dropping the pages from the cache (``posix_fadvise`` DONTNEED would), as
PostgreSQL and RocksDB use it.  The standard library has no binding, so it is called through
ctypes; where it does not exist (not Linux) ``start_writeback`` does nothing, and the fsync
alone still makes the bytes durable: this only changes when the disk does the work.
"""

from __future__ import annotations

import ctypes
import ctypes.util

SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>


def _bind():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


_sync_file_range = _bind()


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing ``[offset, offset + length)`` of ``fd`` to disk now;
    False where that cannot be asked (then the next fsync does all the work, as before)."""
    if _sync_file_range is None or length <= 0:
        return False
    return _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0
