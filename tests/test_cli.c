/* The clapp command end to end: run over a manifest, features written as
 * .npy equal FFmpeg's own conversion, bad files reported once each with the
 * exit status saying so, bad command lines and pipeline text exit 2 with one
 * clear message, --dump-graph round trip, inspect, bounded memory. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

typedef struct cmd_result {
    int   status;     /* exit status, -1 if killed */
    long  maxrss_kb;
    char *out, *err;  /* captured standard output and error */
} cmd_result;

/* Run a shell command, capturing output and the child's peak RSS. */
static cmd_result run_cmd(const char *dir, const char *fmt, ...)
{
    cmd_result r = {-1, 0, NULL, NULL};
    char *cmd = NULL, *outp = tu_path(dir, "cmd.out"), *errp = tu_path(dir, "cmd.err");
    struct rusage ru;
    int wstatus = 0;
    va_list ap;
    pid_t pid;
    va_start(ap, fmt);
    if (vasprintf(&cmd, fmt, ap) < 0)
        cmd = NULL;
    va_end(ap);
    pid = fork();
    if (pid == 0) {
        if (!freopen(outp, "w", stdout) || !freopen(errp, "w", stderr))
            _exit(127);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    if (pid > 0 && wait4(pid, &wstatus, 0, &ru) == pid) {
        r.status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
        r.maxrss_kb = ru.ru_maxrss;
    }
    r.out = tu_read_text(outp);
    r.err = tu_read_text(errp);
    if (getenv("CLAPP_TEST_VERBOSE"))
        fprintf(stderr, "$ %s\n-> %d\n%s%s", cmd, r.status, r.out, r.err);
    free(cmd);
    free(outp);
    free(errp);
    return r;
}

static void result_free(cmd_result *r)
{
    free(r->out);
    free(r->err);
}

/* Read a float32 .npy file: returns data, sets rows and cols (2-D only). */
static float *read_npy(const char *path, long *rows, long *cols)
{
    FILE *f = fopen(path, "rb");
    unsigned char pre[10];
    char hdr[4096];
    float *data = NULL;
    size_t hlen;
    *rows = *cols = -1;
    if (!f)
        return NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY\x01\x00", 8) != 0)
        goto done;
    hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    if (hlen >= sizeof hdr || fread(hdr, 1, hlen, f) != hlen)
        goto done;
    hdr[hlen] = 0;
    if (!strstr(hdr, "'descr': '<f4'") || !strstr(hdr, "'fortran_order': False"))
        goto done;
    if (sscanf(strstr(hdr, "'shape': (") + 10, "%ld, %ld)", rows, cols) != 2)
        goto done;
    data = malloc((size_t)(*rows * *cols) * sizeof(float) + 1);
    if (data && fread(data, sizeof(float), (size_t)(*rows * *cols), f) != (size_t)(*rows * *cols)) {
        free(data);
        data = NULL;
    }
done:
    fclose(f);
    return data;
}

static void write_pipe(const char *path, const char *text)
{
    assert_int_equal(tu_write_text(path, text), 0);
}

/* Write dir/name. */
static int write_in(const char *dir, const char *name, const char *text)
{
    char *p = tu_path(dir, name);
    int rc = tu_write_text(p, text);
    free(p);
    return rc;
}

static void test_run_features_match_ffmpeg(void **state)
{
    char *dir = tu_tmpdir("cli");
    const char *names[] = {"tone.wav", "speechy.mp3", "deep/noise.flac"};
    (void)state;
    assert_int_equal(tu_run("cd %s && mkdir -p deep && "
                            "ffmpeg -v error -f lavfi -i 'sine=f=440:r=44100:d=2.5' -ac 2 tone.wav && "
                            "ffmpeg -v error -f lavfi -i 'sine=f=220:r=48000:d=1.7' -ac 1 -b:a 64k speechy.mp3 && "
                            "ffmpeg -v error -f lavfi -i 'anoisesrc=d=3.1:r=22050:a=0.3' deep/noise.flac", dir), 0);
    char *manifest = tu_path(dir, "m.tsv"), *pipe = tu_path(dir, "p.pipe");
    assert_int_equal(tu_write_text(manifest, "# three files\ntone.wav\nspeechy.mp3\ndeep/noise.flac\n"), 0);
    write_pipe(pipe, "source rate=16000 block=3000 lanes=2\n! features out=feat\n");
    cmd_result r = run_cmd(dir, "cd %s && " CLAPP_BIN " run p.pipe --data m.tsv", dir);
    assert_int_equal(r.status, 0);
    result_free(&r);
    for (int i = 0; i < 3; i++) {
        long rows, cols;
        size_t n_ref = 0;
        char *npy = NULL, *ref = NULL;
        char stem[64];
        snprintf(stem, sizeof stem, "%.*s", (int)(strrchr(names[i], '.') - names[i]), names[i]);
        assert_true(asprintf(&npy, "%s/feat/%s.npy", dir, stem) > 0);
        assert_true(asprintf(&ref, "%s/ref%d.f32", dir, i) > 0);
        assert_int_equal(tu_run("ffmpeg -v error -i %s/%s -ac 1 -ar 16000 -f f32le %s", dir,
                                names[i], ref), 0);
        float *got = read_npy(npy, &rows, &cols);
        float *want = tu_read_f32(ref, &n_ref);
        assert_non_null(got);
        assert_non_null(want);
        assert_int_equal(cols, 1);
        assert_int_equal(rows, (long)n_ref);
        double e = tu_max_abs_diff(got, want, n_ref);
        if (e > 1e-4)
            fail_msg("%s: max abs error %g against ffmpeg", names[i], e);
        free(got);
        free(want);
        free(npy);
        free(ref);
    }
    free(manifest);
    free(pipe);
    tu_rmtree(dir);
    free(dir);
}

static void test_bad_files_reported_once(void **state)
{
    char *dir = tu_tmpdir("cli");
    (void)state;
    assert_int_equal(tu_run("cd %s && "
                            "ffmpeg -v error -f lavfi -i 'sine=f=300:r=16000:d=1' good1.wav && "
                            "ffmpeg -v error -f lavfi -i 'sine=f=500:r=16000:d=2' good2.flac && "
                            "ffmpeg -v error -f lavfi -i 'sine=f=700:r=16000:d=1.5' good3.ogg && "
                            ": > empty.wav && echo 'just some text, not media' > notes.wav && "
                            "ffmpeg -v error -f lavfi -i 'sine=f=900:r=44100:d=3' -b:a 96k full.mp3 && "
                            "head -c 300 full.mp3 > truncated.mp3 && "
                            "cp good2.flac corrupt.flac && "
                            "dd if=/dev/urandom of=corrupt.flac bs=1 seek=0 count=64 conv=notrunc status=none",
                            dir), 0);
    char *manifest = tu_path(dir, "m.tsv"), *pipe = tu_path(dir, "p.pipe");
    assert_int_equal(tu_write_text(manifest, "good1.wav\nmissing.wav\nempty.wav\ngood2.flac\n"
                                             "notes.wav\ntruncated.mp3\ncorrupt.flac\ngood3.ogg\n"), 0);
    write_pipe(pipe, "source rate=16000 block=4000 lanes=3 ! features out=feat\n");
    cmd_result r = run_cmd(dir, "cd %s && " CLAPP_BIN " run p.pipe --data m.tsv", dir);
    /* Runs to the end; the status says some files failed. */
    assert_int_equal(r.status, 1);
    const char *bad[] = {"missing.wav", "empty.wav", "notes.wav", "corrupt.flac"};
    for (int i = 0; i < 4; i++)
        if (tu_count_substr(r.err, bad[i]) != 1)
            fail_msg("'%s' reported %d times, not once:\n%s", bad[i], tu_count_substr(r.err, bad[i]), r.err);
    assert_true(tu_count_substr(r.err, "truncated.mp3") <= 1);
    /* Every good file is there in full. */
    const char *good[] = {"good1", "good2", "good3"};
    const long len[] = {16000, 32000, 24000};
    for (int i = 0; i < 3; i++) {
        long rows, cols;
        char *npy = NULL;
        assert_true(asprintf(&npy, "%s/feat/%s.npy", dir, good[i]) > 0);
        float *got = read_npy(npy, &rows, &cols);
        assert_non_null(got);
        if (labs(rows - len[i]) > 1)
            fail_msg("%s: %ld samples, expected %ld", good[i], rows, len[i]);
        free(got);
        free(npy);
    }
    result_free(&r);
    free(manifest);
    free(pipe);
    tu_rmtree(dir);
    free(dir);
}

static void test_bad_command_lines_exit_2(void **state)
{
    char *dir = tu_tmpdir("cli");
    (void)state;
    assert_int_equal(tu_run("cd %s && ffmpeg -v error -f lavfi -i 'sine=d=0.5' a.wav", dir), 0);
    assert_int_equal(write_in(dir, "m.tsv", "a.wav\n"), 0);
    assert_int_equal(write_in(dir, "badkey.pipe",
                                   "# comment line\nsource rate=16000\n! features otu=x\n"), 0);
    assert_int_equal(write_in(dir, "ok.pipe", "source ! features out=f\n"), 0);
    assert_int_equal(write_in(dir, "badm.tsv", "a.wav\tlabel\tx.phn\textra\n"), 0);

    cmd_result r = run_cmd(dir, "cd %s && " CLAPP_BIN " run badkey.pipe --data m.tsv", dir);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "badkey.pipe:3:"));
    assert_non_null(strstr(r.err, "otu"));
    assert_non_null(strstr(r.err, "out"));   /* the valid key is named */
    result_free(&r);

    r = run_cmd(dir, "cd %s && " CLAPP_BIN " run ok.pipe --data m.tsv --set source0.rate=abc", dir);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "rate"));
    assert_non_null(strstr(r.err, "abc"));
    result_free(&r);

    r = run_cmd(dir, "cd %s && " CLAPP_BIN " run ok.pipe --data m.tsv --set nosuch.rate=1", dir);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "nosuch"));
    result_free(&r);

    r = run_cmd(dir, "cd %s && " CLAPP_BIN " run ok.pipe --data badm.tsv", dir);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "badm.tsv:1"));
    result_free(&r);

    r = run_cmd(dir, "cd %s && " CLAPP_BIN " run ok.pipe --data nosuch.tsv", dir);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "nosuch.tsv"));
    result_free(&r);

    r = run_cmd(dir, "cd %s && " CLAPP_BIN " run missing.pipe --data m.tsv", dir);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "missing.pipe"));
    result_free(&r);

    r = run_cmd(dir, "cd %s && " CLAPP_BIN " run ok.pipe --bogus", dir);
    assert_int_equal(r.status, 2);
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}

static void test_dump_graph_round_trip(void **state)
{
    char *dir = tu_tmpdir("cli");
    (void)state;
    assert_int_equal(write_in(dir, "p.pipe",
                                   "source lanes=3 # three lanes\n! features out=somewhere\n"), 0);
    cmd_result r = run_cmd(dir, "cd %s && " CLAPP_BIN " run p.pipe --dump-graph --set source0.rate=8000", dir);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "lanes=3"));
    assert_non_null(strstr(r.out, "rate=8000"));
    assert_non_null(strstr(r.out, "block=20480"));   /* defaults are printed */
    assert_non_null(strstr(r.out, "out=somewhere"));
    assert_int_equal(write_in(dir, "dumped.pipe", r.out), 0);
    cmd_result r2 = run_cmd(dir, "cd %s && " CLAPP_BIN " run dumped.pipe --dump-graph", dir);
    assert_int_equal(r2.status, 0);
    assert_string_equal(r.out, r2.out);
    result_free(&r);
    result_free(&r2);
    tu_rmtree(dir);
    free(dir);
}

static void test_inspect(void **state)
{
    char *dir = tu_tmpdir("cli");
    (void)state;
    cmd_result r = run_cmd(dir, CLAPP_BIN " inspect");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "source"));
    assert_non_null(strstr(r.out, "clapp"));
    assert_non_null(strstr(r.out, "features"));
    result_free(&r);
    r = run_cmd(dir, CLAPP_BIN " inspect source");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "lanes"));
    assert_non_null(strstr(r.out, "[1, 4096]"));
    assert_non_null(strstr(r.out, "stream|window"));
    result_free(&r);
    r = run_cmd(dir, CLAPP_BIN " inspect nosuch");
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.err, "nosuch"));
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}

/* Peak memory does not grow with the file: a 10-minute file stays far
 * under 100 MB (the acceptance check on a 1-hour file is tools/bench-memory). */
static void test_memory_bounded(void **state)
{
#ifdef CLAPP_SANITIZED
    skip();   /* shadow memory makes RSS meaningless under ASan */
#endif
    char *dir = tu_tmpdir("cli");
    (void)state;
    assert_int_equal(tu_run("cd %s && ffmpeg -v error -f lavfi -i 'sine=f=440:r=16000:d=600' long.wav", dir), 0);
    assert_int_equal(write_in(dir, "m.tsv", "long.wav\n"), 0);
    assert_int_equal(write_in(dir, "p.pipe", "source block=20480 lanes=8\n"), 0);
    cmd_result r = run_cmd(dir, "cd %s && " CLAPP_BIN " run p.pipe --data m.tsv", dir);
    assert_int_equal(r.status, 0);
    if (r.maxrss_kb > 100 * 1024)
        fail_msg("peak RSS %ld kB for a 10-minute file", r.maxrss_kb);
    print_message("peak RSS decoding 10 min of audio: %.1f MB\n", (double)r.maxrss_kb / 1024.0);
    result_free(&r);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_features_match_ffmpeg),
        cmocka_unit_test(test_bad_files_reported_once),
        cmocka_unit_test(test_bad_command_lines_exit_2),
        cmocka_unit_test(test_dump_graph_round_trip),
        cmocka_unit_test(test_inspect),
        cmocka_unit_test(test_memory_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
