#!/usr/bin/env python3
"""How fast read() copies a cached file into a 128 KiB buffer, by where the buffer starts in
its page: the buffer is a slice of an anonymous mapping (which starts on a page boundary) at
each offset, and the best of five whole-file reads is kept. On an AMD EPYC a buffer 16 bytes
past a page boundary, where glibc puts every block it maps by itself, was 4-5x slower than
one on the boundary (docs/benchmarks.md, "Read buffers on a page boundary").
Usage: bench-read-alignment.py [FILE] (default: the largest file in /usr/lib/x86_64-linux-gnu,
read once first so that it is cached).
"""
import mmap
import os
import sys
import time

BUF = 128 * 1024
OFFSETS = [0, 16, 64, 256, 2048, 4032, 4080, 0, 16]


def largest(tree):
    best, size = None, -1
    for name in os.listdir(tree):
        path = os.path.join(tree, name)
        if os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > size:
            best, size = path, os.path.getsize(path)
    return best


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else largest("/usr/lib/x86_64-linux-gnu")
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
    buf = mmap.mmap(-1, BUF + 8192)
    view = memoryview(buf)
    print(f"{path}, {os.path.getsize(path)} bytes, {BUF // 1024} KiB reads")
    for off in OFFSETS:
        fd = os.open(path, os.O_RDONLY)
        best, total = float("inf"), 0
        for _ in range(5):
            os.lseek(fd, 0, os.SEEK_SET)
            start, total = time.perf_counter(), 0
            while True:
                n = os.readv(fd, [view[off : off + BUF]])
                if n == 0:
                    break
                total += n
            best = min(best, time.perf_counter() - start)
        os.close(fd)
        print(f"buffer at page offset {off:5d}: {total / best / 1e9:5.1f} GB/s")


if __name__ == "__main__":
    main()
