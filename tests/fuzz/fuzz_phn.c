/* Fuzz target: .phn alignments. Every input is a .phn file, read with the
 * frozen CMU-41 set (odd sizes) or a growing one (even sizes); a load that
 * fails must say why, and a loaded alignment gives frame labels (at 100
 * per second of 16 kHz audio) that are ids of the set or the silence id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_support.h"
#include "media/labels.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clapp_labelset ls = {0};
    clapp_alignment a;
    char path[64], err[1024] = "";
    int rc;
    fuzz_memfile(data, size, path);
    if (size % 2 && clapp_labelset_init_cmu41(&ls) < 0)
        abort();
    rc = clapp_alignment_load(&a, path, &ls, err, sizeof err);
    if (rc < 0 && !err[0]) {
        fprintf(stderr, "alignment load failed (status %d) without a message\n", rc);
        abort();
    }
    if (rc == 0) {
        int32_t labels[256];
        int64_t end = a.n > 0 ? a.seg[a.n - 1].end : 0;
        /* The frames of the first 2.56 s, and of the last ones. */
        int64_t n = clapp_alignment_frames(&a, 16000, end < 40960 ? end : 40960, 100, -1, labels, 256);
        for (int64_t i = 0; i < n; i++)
            if (labels[i] < -1 || labels[i] >= ls.n)
                abort();
        for (int64_t i = end / 160 - 4; i <= end / 160 + 1; i++) {
            int32_t l = clapp_alignment_label_at(&a, 16000, 100, i < 0 ? 0 : i, -1);
            if (l < -1 || l >= ls.n)
                abort();
        }
        clapp_alignment_free(&a);
    }
    clapp_labelset_free(&ls);
    return 0;
}
