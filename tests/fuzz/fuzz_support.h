/* What the fuzz targets share: a quiet host, and the input as a file (the
 * loaders take paths) without touching the disk. Each target defines
 * LLVMFuzzerTestOneInput (and LLVMFuzzerInitialize when it sets up state);
 * it is linked either with libFuzzer (-DCLAPP_FUZZ=ON, clang, tools/fuzz)
 * or with driver.c, which runs files through it (the CTest replay of the
 * seed corpora, any compiler). */
#ifndef CLAPP_FUZZ_SUPPORT_H
#define CLAPP_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "clapp/plugin.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A host whose log goes nowhere (the targets check results, not messages). */
void fuzz_host_init(clapp_host *host);

/* Replace the contents of this process's in-memory file (memfd) with the
 * bytes given; its path, "/proc/self/fd/N", goes to path. Aborts if the
 * memfd cannot be made or written (not an input problem). */
void fuzz_memfile(const uint8_t *data, size_t size, char path[64]);

/* The folder to write seed files to ($CLAPP_FUZZ_SEED_DIR), or NULL: the
 * targets whose seeds are binary (checkpoints) write them from
 * LLVMFuzzerInitialize when it is set. */
const char *fuzz_seed_dir(void);

#endif
