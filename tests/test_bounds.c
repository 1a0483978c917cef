/* Bounds on what an input controls: text without a newline (a manifest, a
 * .phn alignment, a pipeline file that is /dev/zero) is refused after at
 * most 1 MiB with an error naming the file; a video whose stream header
 * claims 2/214748365 fps (a good AVI with its strh rewritten) fails at once
 * with a clear error instead of writing frames forever; one whose header
 * declares 100 s while its timestamps span 2000 s (each frame 100 s, under
 * the 600 s per-frame bound) stops at twice the declared duration plus a
 * minute. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

/* Run `clapp ARGS` in dir with a 10 s CPU and 30 s wall-clock limit
 * (unbounded reading or waiting would hit one); expect exit status want and
 * stderr containing needle. */
static void expect(const char *dir, int want, const char *needle, const char *args)
{
    char *errp = tu_path(dir, "err.txt"), *err;
    int rc = tu_run("cd '%s' && (ulimit -t 10; timeout 30 %s %s) 2> err.txt; test $? -eq %d", dir, CLAPP_BIN, args, want);
    err = tu_read_text(errp);
    if (rc != 0 || !strstr(err, needle))
        fail_msg("clapp %s: expected exit %d and '%s'; stderr:\n%s", args, want, needle, err);
    free(err);
    free(errp);
}

static void test_text_without_newline(void **state)
{
    char *dir = tu_tmpdir("bounds");
    (void)state;
    assert_int_equal(tu_run("cd '%s' && printf 'source rate=16000 block=1024 lanes=1\\n' > p.pipe && "
                            "ffmpeg -nostdin -v error -y -f lavfi -i 'sine=duration=1' -ar 16000 a.wav && "
                            "head -c 3000000 /dev/zero | tr '\\000' x > long.txt && "
                            "printf 'a.wav\\tx\\t/dev/zero\\n' > phn.tsv && printf 'a.wav\\tx\\tlong.txt\\n' > phn2.tsv",
                            dir), 0);
    expect(dir, 2, "/dev/zero:1: line longer than 1 MiB (not a text manifest?)", "run p.pipe --data /dev/zero");
    expect(dir, 2, "long.txt:1: line longer than 1 MiB (not a text manifest?)", "run p.pipe --data long.txt");
    expect(dir, 2, "/dev/zero: not a text file (contains a NUL byte)", "run /dev/zero --dump-graph");
    expect(dir, 2, "long.txt: larger than 1 MiB (not a pipeline file?)", "run long.txt --dump-graph");
    expect(dir, 1, "/dev/zero:1: line longer than 1 MiB (not a text alignment?)", "run p.pipe --data phn.tsv");
    expect(dir, 1, "long.txt:1: line longer than 1 MiB (not a text alignment?)", "run p.pipe --data phn2.tsv");
    tu_rmtree(dir);
    free(dir);
}

static void test_absurd_frame_rate(void **state)
{
    char *dir = tu_tmpdir("bounds"), *npy = tu_path(dir, "out/slow.partial.npy");
    struct stat st;
    (void)state;
    /* bad.avi: rate/scale 2/214748365; slow.avi: 1/100 fps and a length of
     * one frame (declares 100 s; its 20 frames span 2000 s). */
    assert_int_equal(tu_run("cd '%s' && ffmpeg -nostdin -v error -y -f lavfi -i testsrc=size=32x32:rate=10:duration=2 "
                            "-c:v mjpeg good.avi && python3 -c \"import struct\n"
                            "b=bytearray(open('good.avi','rb').read()); i=b.index(b'strh')\n"
                            "assert b[i+8:i+12]==b'vids'\n"
                            "b[i+28:i+36]=struct.pack('<II',214748365,2)\n"
                            "open('bad.avi','wb').write(b)\n"
                            "b[i+28:i+36]=struct.pack('<II',100,1); b[i+40:i+44]=struct.pack('<I',1)\n"
                            "open('slow.avi','wb').write(b)\" && "
                            "printf 'source kind=video width=16 height=16 fps=10 color=gray block=64 lanes=1 "
                            "! features name=feat out=out/\\n' > v.pipe && printf 'bad.avi\\n' > m.tsv && "
                            "printf 'slow.avi\\n' > s.tsv", dir), 0);
    /* At once (5 s of wall-clock time at most), nothing written. */
    assert_int_equal(tu_run("cd '%s' && timeout 5 %s run v.pipe --data m.tsv 2> err.txt; test $? -eq 1", dir,
                            CLAPP_BIN), 0);
    expect(dir, 1, "bad.avi: implausible frame rate 2/214748365 in the stream header (a frame would last 1.07e+08 s, "
           "more than 600 s)", "run v.pipe --data m.tsv");
    assert_int_equal(tu_run("cd '%s' && test -z \"$(ls out 2>/dev/null)\"", dir), 0);
    /* The per-file bound: 2 x 100 s + 60 s at 10 fps = 2601 frames, marked partial. */
    expect(dir, 1, "slow.avi: 260 s of output, more than 2 x the 100.000 s the container declares plus 60 s "
           "(implausible timestamps in the file)", "run v.pipe --data s.tsv");
    assert_int_equal(stat(npy, &st), 0);
    assert_true(st.st_size <= 128 + (2601 + 64) * 16 * 16 * 4);
    tu_rmtree(dir);
    free(npy);
    free(dir);
}

/* A FIFO with no writer, or one whose writer stalls, fails the file after
 * io_timeout instead of blocking forever; a FIFO whose writer sends a whole
 * file is read as before. */
static void test_fifo_timeout(void **state)
{
    char *dir = tu_tmpdir("bounds"), *npy = tu_path(dir, "out/f.npy");
    (void)state;
    assert_int_equal(tu_run("cd '%s' && mkfifo f.fifo && printf 'f.fifo\n' > m.tsv && "
                            "printf 'source rate=16000 block=1024 lanes=1 io_timeout=1 ! features name=feat out=out/\n'"
                            " > p.pipe && ffmpeg -nostdin -v error -y -f lavfi -i 'sine=duration=1' -ar 16000 a.wav",
                            dir), 0);
    expect(dir, 1, "f.fifo: no data within 1 s (source io_timeout)", "run p.pipe --data m.tsv");
    assert_int_equal(tu_run("cd '%s' && ( (printf 'RIFF'; sleep 4) > f.fifo & )", dir), 0);
    expect(dir, 1, "f.fifo: no data within 1 s (source io_timeout)", "run p.pipe --data m.tsv");
    assert_int_equal(tu_run("sleep 4"), 0);
    assert_int_equal(tu_run("cd '%s' && ( cat a.wav > f.fifo & )", dir), 0);
    expect(dir, 0, "", "run p.pipe --data m.tsv");
    assert_int_equal(access(npy, F_OK), 0);
    tu_rmtree(dir);
    free(npy);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_without_newline),
        cmocka_unit_test(test_absurd_frame_rate),
        cmocka_unit_test(test_fifo_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
