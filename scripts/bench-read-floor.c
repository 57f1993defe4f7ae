/*
 * The kernel's share of a full FIM scan, without any hashing: opens, fstats, reads (into one
 * page-aligned 128 KiB buffer, touching a byte per cache line as a hash would) and closes
 * every file named in a list, the way the scan's hashing threads do, single-threaded, and
 * prints the bytes read. Run under /usr/bin/time: its CPU time is the floor the syscalls and
 * page-cache copies set, to which SHA-256 (`openssl speed -evp sha256`) adds its own.
 *
 *   cc -O2 -o /tmp/bench-read-floor scripts/bench-read-floor.c
 *   find /usr -type f -size +64k > big.txt; find /usr -type f -size -65k > small.txt
 *   cat $(cat big.txt small.txt) > /dev/null     # warm the page cache (or run it twice)
 *   /usr/bin/time -f "%e s %U user %S sys" /tmp/bench-read-floor big.txt
 *
 * docs/benchmarks.md, "Where a full check's time goes".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BUFFER_BYTES (128 * 1024)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE-LIST\n", argv[0]);
        return 2;
    }
    FILE *list = fopen(argv[1], "r");
    if (!list) {
        perror(argv[1]);
        return 2;
    }
    unsigned char *buf = aligned_alloc(4096, BUFFER_BYTES);
    if (!buf) {
        perror("aligned_alloc");
        return 2;
    }
    char line[4096];
    unsigned long files = 0, bytes = 0, touched = 0;
    while (fgets(line, sizeof line, list)) {
        line[strcspn(line, "\n")] = 0;
        int fd = open(line, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
            ssize_t n;
            while ((n = read(fd, buf, BUFFER_BYTES)) > 0) {
                for (ssize_t i = 0; i < n; i += 64)
                    touched += buf[i];
                bytes += (unsigned long)n;
            }
            files++;
        }
        close(fd);
    }
    fclose(list);
    /* `touched` is printed so that the reads of the buffer are not optimised away. */
    printf("%lu files, %lu bytes (%lu)\n", files, bytes, touched);
    return 0;
}
