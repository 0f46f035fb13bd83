"""libc calls Python's standard library does not wrap (mmap with an address, mincore, syscall),
through ctypes; shared by the image residency (bootserverd.images.residency) and the NBD
service's page cache checks (nbd.pagecache)."""

from __future__ import annotations

import ctypes
import ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
MAP_FAILED = ctypes.c_void_p(-1).value
RESIDENT = bytes(i & 1 for i in range(256))   # mincore's vector: bit 0 says resident, the rest are reserved
