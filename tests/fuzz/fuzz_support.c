/* Helpers of the fuzz targets (see fuzz_support.h). */
#define _GNU_SOURCE
#include "fuzz_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void quiet_log(void *user, int level, const char *who, const char *fmt, va_list ap)
{
    (void)user;
    (void)level;
    (void)who;
    (void)fmt;
    (void)ap;
}

void fuzz_host_init(clapp_host *host)
{
    memset(host, 0, sizeof *host);
    host->struct_size = sizeof *host;
    host->log = quiet_log;
}

/* One memfd per process, reused by every input: no file system traffic. */
static int memfd = -1;

void fuzz_memfile(const uint8_t *data, size_t size, char path[64])
{
    size_t done = 0;
    if (memfd < 0 && (memfd = memfd_create("clapp-fuzz", 0)) < 0) {
        perror("memfd_create");
        abort();
    }
    if (ftruncate(memfd, 0) != 0) {
        perror("ftruncate");
        abort();
    }
    while (done < size) {
        ssize_t w = pwrite(memfd, data + done, size - done, (off_t)done);
        if (w <= 0) {
            perror("pwrite");
            abort();
        }
        done += (size_t)w;
    }
    snprintf(path, 64, "/proc/self/fd/%d", memfd);
}

const char *fuzz_seed_dir(void)
{
    const char *d = getenv("CLAPP_FUZZ_SEED_DIR");
    return d && *d ? d : NULL;
}
