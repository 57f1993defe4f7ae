#!/usr/bin/env python3
"""CPU of SHA-256 over the files above 1 MiB in a tree (default /usr/lib/x86_64-linux-gnu),
three ways, alternated three times: read() into a 256 KiB buffer (what the FIM scan does),
mmap() of the whole file, and hashing an in-cache buffer of the same total size (the floor:
no page-cache copy, no page faults). Warm the page cache first, e.g.
`find TREE -type f -size +1M -exec cat {} + > /dev/null`. Usage: bench-read-vs-mmap.py [TREE]
(docs/benchmarks.md, "Hashing pipeline and metadata-first checks").
"""
import hashlib
import mmap
import os
import stat
import sys
import time

tree = sys.argv[1] if len(sys.argv) > 1 else "/usr/lib/x86_64-linux-gnu"
files = []
for root, _dirs, names in os.walk(tree):
    for name in names:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size > 1 << 20:
            files.append(path)
total = sum(os.path.getsize(p) for p in files)


def by_read():
    buf = bytearray(256 * 1024)
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(memoryview(buf)[:n])


def by_mmap():
    for path in files:
        with open(path, "rb", buffering=0) as f:
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
                hashlib.sha256(m)


def floor():
    data = bytes(8 << 20)
    h = hashlib.sha256()
    for _ in range(total // len(data)):
        h.update(data)


print(f"{len(files)} files, {total / 1e9:.2f} GB")
for _ in range(3):
    for fn in (by_read, by_mmap, floor):
        t = time.process_time()
        fn()
        print(f"{fn.__name__:8} cpu {time.process_time() - t:.3f} s")
