/* A host program that embeds clapp through its public API alone: it makes
 * its own audio (a chirp plus seeded noise), writes it as a float WAV file
 * (so that `clapp extract` can be run on exactly the same samples), pushes
 * it into a pipeline in uneven chunks, steps block by block and writes what
 * one element produced for the stream as a .npy file, float32, one row per
 * time step, as the features sink and `clapp extract` write them.
 *
 *   host PIPE ELEMENT OUT.npy OUT.wav [SECONDS] [NAME.KEY=VALUE]...
 *
 * Built against an installed clapp with pkg-config or find_package(clapp). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <clapp/clapp.h>

/* The WAV file: IEEE float, mono. Returns 0 or -1. */
static int write_wav(const char *path, const float *x, int64_t n, int rate)
{
    FILE *f = fopen(path, "wb");
    uint32_t data = (uint32_t)(n * 4), u32;
    uint16_t u16;
    int ok = f != NULL;
#define W32(v) (u32 = (uint32_t)(v), ok = ok && fwrite(&u32, 4, 1, f) == 1)
#define W16(v) (u16 = (uint16_t)(v), ok = ok && fwrite(&u16, 2, 1, f) == 1)
#define WTAG(s) (ok = ok && fwrite(s, 1, 4, f) == 4)
    WTAG("RIFF"); W32(4 + 8 + 16 + 8 + 4 + 8 + data); WTAG("WAVE");
    WTAG("fmt "); W32(16); W16(3); W16(1); W32(rate); W32(rate * 4); W16(4); W16(32);
    WTAG("fact"); W32(4); W32(n);
    WTAG("data"); W32(data);
    ok = ok && fwrite(x, 4, (size_t)n, f) == (size_t)n;
    if (f && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* A .npy file of float32 rows x cols. Returns 0 or -1. */
static int write_npy(const char *path, const float *x, int64_t rows, int64_t cols)
{
    char header[128];
    int n = snprintf(header, sizeof header,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)rows, (long long)cols);
    FILE *f = fopen(path, "wb");
    int ok = f != NULL;
    while (n < 117)   /* 10-byte preamble + header = 128, ends with '\n' */
        header[n++] = ' ';
    header[n++] = '\n';
    ok = ok && fwrite("\x93NUMPY\x01\x00\x76\x00", 1, 10, f) == 10 &&
         fwrite(header, 1, (size_t)n, f) == (size_t)n &&
         fwrite(x, sizeof *x, (size_t)(rows * cols), f) == (size_t)(rows * cols);
    if (f && fclose(f) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    clapp_pipeline *p = NULL;
    clapp_options opt;
    clapp_stream_info si, out_info;
    float *signal = NULL, *feat = NULL;
    int64_t n, rows = 0, cap = 0, pushed = 0;
    double seconds = 1.3;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    int status = 1, rc, n_sets = 0;
    const char **sets = NULL;

    if (argc < 5) {
        fprintf(stderr, "usage: %s PIPE ELEMENT OUT.npy OUT.wav [SECONDS] [NAME.KEY=VALUE]...\n", argv[0]);
        return 2;
    }
    if (argc > 5 && !strchr(argv[5], '='))
        seconds = atof(argv[5]);
    sets = (const char **)(argv + (argc > 5 && !strchr(argv[5], '=') ? 6 : 5));
    n_sets = (int)(argv + argc - (char **)sets);

    clapp_options_init(&opt);
    opt.seed = 1;   /* clapp extract's default --seed */
    if ((rc = clapp_pipeline_create_from_file(&p, argv[1], sets, n_sets, &opt)) != CLAPP_OK ||
        (rc = clapp_pipeline_open_push(p, 1)) != CLAPP_OK ||
        (rc = clapp_pipeline_stream(p, argv[2], &out_info)) != CLAPP_OK ||
        (rc = clapp_pipeline_stream(p, "source0", &si)) != CLAPP_OK)
        goto fail;
    if (out_info.ndim != 3) {
        fprintf(stderr, "host: %s: an audio example; the element's stream is not [B, C, T]\n", argv[2]);
        goto done;
    }

    /* The signal: a chirp from 200 to 2000 Hz and seeded uniform noise. */
    n = (int64_t)(seconds * si.rate);
    if (!(signal = malloc((size_t)n * sizeof *signal)))
        goto done;
    for (int64_t i = 0; i < n; i++) {
        double t = (double)i / si.rate;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        signal[i] = (float)(0.5 * sin(2 * 3.14159265358979323846 * (200 * t + 900 * t * t / seconds)) +
                            0.1 * ((double)(rng >> 40) / (double)(1ull << 24) - 0.5));
    }
    if (write_wav(argv[4], signal, n, (int)si.rate) != 0) {
        fprintf(stderr, "host: cannot write %s\n", argv[4]);
        goto done;
    }

    /* Push in uneven chunks, stepping whenever a block is ready. */
    if ((rc = clapp_pipeline_begin(p, 0, "sig", si.rate)) != CLAPP_OK)
        goto fail;
    for (int64_t chunk = 777; ; chunk = chunk * 3 % 5003 + 1) {
        int64_t take = n - pushed < chunk ? n - pushed : chunk;
        if ((rc = clapp_pipeline_push(p, 0, signal + pushed, take)) != CLAPP_OK)
            goto fail;
        pushed += take;
        if (pushed == n && (rc = clapp_pipeline_end(p, 0)) != CLAPP_OK)
            goto fail;
        while ((rc = clapp_pipeline_step(p)) == 1) {
            const clapp_block *b;
            int64_t C, T, len;
            if ((rc = clapp_pipeline_output(p, argv[2], &b)) != CLAPP_OK)
                goto fail;
            C = b->x.shape[1];
            T = b->x.shape[2];
            len = b->lane[0].len;
            if (rows + len > cap) {
                float *g;
                cap = (rows + len) * 2;
                if (!(g = realloc(feat, (size_t)(cap * C) * sizeof *g)))
                    goto done;
                feat = g;
            }
            /* lane 0 of [B, C, T] into time-major rows */
            for (int64_t t = 0; t < len; t++)
                for (int64_t c = 0; c < C; c++)
                    feat[(rows + t) * C + c] = b->x.data[c * T + t];
            rows += len;
        }
        if (rc < 0)
            goto fail;
        if (pushed == n)
            break;
    }
    if ((rc = clapp_pipeline_finish(p)) != CLAPP_OK)
        goto fail;
    if (write_npy(argv[3], feat, rows, out_info.shape[1]) != 0) {
        fprintf(stderr, "host: cannot write %s\n", argv[3]);
        goto done;
    }
    printf("host: clapp %s: %lld samples in, %lld x %lld features of '%s' to %s\n", clapp_version(),
           (long long)n, (long long)rows, (long long)out_info.shape[1], argv[2], argv[3]);
    status = 0;
    goto done;
fail:
    fprintf(stderr, "host: %s (%s)\n", clapp_pipeline_error(p), clapp_status_string(rc));
done:
    clapp_pipeline_destroy(p);
    free(signal);
    free(feat);
    return status;
}
