/* A stand-in for libFuzzer's main, for builds without it (any compiler,
 * the CTest replay of the seed corpora): runs every file named on the
 * command line, or every file of a folder named there, through the
 * target once; prints how many. A crash, a sanitizer report or a failed
 * check of the target fails it as it would under libFuzzer. Arguments that
 * start with '-' (libFuzzer's flags) are ignored, so scripts can call a
 * target the same way in both builds. */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_support.h"

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;
    if (!f) {
        perror(path);
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        !(buf = malloc((size_t)n + 1)) || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    /* An exact-size copy, so that reading past the input is caught. */
    {
        unsigned char *exact = malloc((size_t)n ? (size_t)n : 1);
        if (!exact) {
            free(buf);
            return -1;
        }
        memcpy(exact, buf, (size_t)n);
        LLVMFuzzerTestOneInput(exact, (size_t)n);
        free(exact);
    }
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    long runs = 0;
    int failed = 0;
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (argv[i][0] == '-')
            continue;   /* libFuzzer's flags (-runs=0 ...): nothing to do here */
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            failed = 1;
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            struct dirent **names = NULL;
            int n = scandir(argv[i], &names, NULL, alphasort);
            for (int k = 0; k < n; k++) {
                char *p = NULL;
                if (names[k]->d_name[0] != '.' && asprintf(&p, "%s/%s", argv[i], names[k]->d_name) > 0) {
                    failed |= run_file(p) < 0;
                    runs++;
                }
                free(p);
                free(names[k]);
            }
            free(names);
        } else {
            failed |= run_file(argv[i]) < 0;
            runs++;
        }
    }
    printf("%s: %ld input(s) run\n", argv[0], runs);
    return failed;
}
