/* Never lose work: `clapp train` stopped by SIGINT or SIGTERM after a few
 * blocks finishes the block, writes the final checkpoint (which loads), the
 * metrics summary and .npy headers that match their data, says so once and
 * exits 130 / 143; `clapp extract` likewise; an element failing mid-run
 * still leaves the final checkpoint of the consistent weights; the first
 * SIGINT also ends a wait for input that never comes (a FIFO without a
 * writer, an HTTP server that never answers): exit 130 within 2 s, the
 * input named; and `clapp train` killed by
 * SIGTERM at 20 random moments (start-up, resume, training, periodic saves)
 * always leaves a checkpoint that loads and that --resume continues from,
 * and no temporary file. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <dirent.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clapp/plugin_util.h"

#include "clapp/clapp.h"
#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

/* The last line of text (its trailing newline ignored). */
static const char *last_line(char *text)
{
    size_t n = strlen(text);
    char *nl;
    if (n && text[n - 1] == '\n')
        text[n - 1] = 0;
    nl = strrchr(text, '\n');
    return nl ? nl + 1 : text;
}

/* Start argv[] with standard output and error into files; returns the pid. */
static pid_t spawn(char *const argv[], const char *out, const char *err)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(out, "w", stdout) || !freopen(err, "w", stderr))
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Wait until file `path` holds at least n occurrences of needle (60 s at most). */
static int wait_for(const char *path, const char *needle, int n)
{
    for (int i = 0; i < 600; i++) {
        char *text = tu_read_text(path);
        int k = tu_count_substr(text, needle);
        free(text);
        if (k >= n)
            return 1;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* waitpid's raw status within secs seconds; -1 (the child then killed) if
 * it has not ended by then. */
static int wait_raw_within(pid_t pid, double secs)
{
    double t0 = now_s();
    int ws = 0;
    while (waitpid(pid, &ws, WNOHANG) == 0) {
        if (now_s() - t0 > secs) {
            kill(pid, SIGKILL);
            waitpid(pid, &ws, 0);
            return -1;
        }
        sleep_s(0.01);
    }
    return ws;
}

static int wait_status(pid_t pid)
{
    int ws = 0;
    if (waitpid(pid, &ws, 0) != pid)
        return -1;
    if (getenv("CLAPP_TEST_VERBOSE"))
        fprintf(stderr, "child %d: %s %d\n", (int)pid, WIFEXITED(ws) ? "exit" : "signal",
                WIFEXITED(ws) ? WEXITSTATUS(ws) : WTERMSIG(ws));
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

typedef struct fixture {
    char *dir, *pipe, *manifest, *ckpt, *metrics, *out, *err, *feat;
    char  text[1024];
    pid_t server;   /* a helper process to end at teardown, 0 if none */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    char *wav;
    f->dir = tu_tmpdir("signals");
    f->pipe = tu_path(f->dir, "p.pipe");
    f->manifest = tu_path(f->dir, "m.tsv");
    f->ckpt = tu_path(f->dir, "c.safetensors");
    f->metrics = tu_path(f->dir, "metrics.jsonl");
    f->out = tu_path(f->dir, "out.txt");
    f->err = tu_path(f->dir, "err.txt");
    f->feat = tu_path(f->dir, "feat");
    wav = tu_path(f->dir, "a.wav");
    assert_int_equal(tu_run("ffmpeg -nostdin -v error -y -f lavfi -i 'sine=frequency=440:duration=30' "
                            "-ar 16000 -ac 1 '%s'", wav), 0);
    assert_int_equal(tu_write_text(f->manifest, "a.wav\n"), 0);
    snprintf(f->text, sizeof f->text,
             "source rate=16000 block=2048 lanes=1 ! conv1d name=c1 out=8 kernel=10 stride=5 pad=2 "
             "! clapp name=l1 steps=2 negatives=3 window=0 ! features name=feat out=%s/\n", f->feat);
    assert_int_equal(tu_write_text(f->pipe, f->text), 0);
    free(wav);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->server > 0) {
        kill(f->server, SIGKILL);
        waitpid(f->server, NULL, 0);
    }
    tu_rmtree(f->dir);
    free(f->dir); free(f->pipe); free(f->manifest); free(f->ckpt); free(f->metrics);
    free(f->out); free(f->err); free(f->feat);
    free(f);
    return 0;
}

/* The checkpoint loads into the pipeline; returns its "blocks". */
static long checkpoint_blocks(const fixture *f)
{
    clapp_pipeline *p = NULL;
    clapp_options o;
    char *blocks = NULL, err[512] = "";
    long n;
    clapp_options_init(&o);
    o.learn = 1;
    assert_int_equal(clapp_pipeline_create_from_text(&p, f->text, NULL, 0, &o), CLAPP_OK);
    assert_int_equal(clapp_pipeline_open_manifest(p, f->manifest, 1), CLAPP_OK);
    if (clapp_pipeline_load(p, f->ckpt) != CLAPP_OK)
        fail_msg("%s does not load: %s", f->ckpt, clapp_pipeline_error(p));
    clapp_pipeline_destroy(p);
    assert_int_equal(clapp_checkpoint_metadata(f->ckpt, "blocks", &blocks, err, sizeof err), CLAPP_OK);
    n = strtol(blocks, NULL, 10);
    clapp_free(blocks);
    return n;
}

static void interrupted_train(fixture *f, int sig, int want_status, const char *name)
{
    char *argv[] = {CLAPP_BIN, "train", f->pipe, "--data", f->manifest, "--epochs", "1000", "--checkpoint",
                    f->ckpt, "--metrics", f->metrics, "--diag-every", "0", NULL};
    char *npy = tu_path(f->feat, "a.npy"), *err, *metrics;
    const char *last;
    pid_t pid;
    int status;
    long rows, blocks;

    pid = spawn(argv, f->out, f->err);
    assert_true(pid > 0);
    if (!wait_for(f->metrics, "\"event\":\"block\"", 3)) {
        kill(pid, SIGKILL);
        wait_status(pid);
        fail_msg("the run did not reach 3 blocks");
    }
    assert_int_equal(kill(pid, sig), 0);
    status = wait_status(pid);
    err = tu_read_text(f->err);
    metrics = tu_read_text(f->metrics);
    if (status != want_status)
        fail_msg("exit %d, expected %d; stderr:\n%s", status, want_status, err);
    /* One message, naming the signal and the checkpoint. */
    assert_int_equal(tu_count_substr(err, "interrupted by"), 1);
    assert_non_null(strstr(err, name));
    assert_non_null(strstr(err, f->ckpt));
    /* The summary closes the metrics and says the run was interrupted. */
    last = last_line(metrics);
    assert_non_null(strstr(last, "\"event\":\"summary\""));
    assert_non_null(strstr(last, name));
    /* The checkpoint loads and holds every block the metrics list. */
    blocks = checkpoint_blocks(f);
    assert_true(blocks >= 3);
    assert_int_equal(blocks, tu_count_substr(metrics, "\"event\":\"block\""));
    /* The features file's header matches its data. */
    rows = tu_npy_rows_consistent(npy);
    assert_true(rows > 0);
    free(err);
    free(metrics);
    free(npy);
}

static void test_sigint_saves(void **state)
{
    interrupted_train(*state, SIGINT, 130, "SIGINT");
}

static void test_sigterm_saves(void **state)
{
    interrupted_train(*state, SIGTERM, 143, "SIGTERM");
}

/* An element failing at block 5: exit 1 naming it, and the checkpoint of
 * the 4 blocks before, plus the summary line. */
static void test_element_failure_keeps_checkpoint(void **state)
{
    fixture *f = *state;
    char *pipe = tu_path(f->dir, "fail.pipe"), *err, *metrics;
    char text[1200];
    snprintf(text, sizeof text, "%.*s ! fixture_fail_at name=boom at=5\n", (int)strcspn(f->text, "\n"), f->text);
    assert_int_equal(tu_write_text(pipe, text), 0);
    assert_int_equal(tu_run("CLAPP_PLUGIN_PATH=%s %s train '%s' --data '%s' --checkpoint '%s' --metrics '%s' "
                            "--diag-every 0 2> '%s'; test $? -eq 1", CLAPP_TEST_FIXTURE_DIR, CLAPP_BIN, pipe,
                            f->manifest, f->ckpt, f->metrics, f->err), 0);
    err = tu_read_text(f->err);
    metrics = tu_read_text(f->metrics);
    assert_non_null(strstr(err, "boom"));
    assert_non_null(strstr(last_line(metrics), "\"event\":\"summary\""));
    assert_int_equal(tu_count_substr(metrics, "\"event\":\"block\""), 4);
    /* The weights after block 4: load them into the pipeline without the fixture. */
    {
        char *blocks = NULL, e[512] = "";
        assert_int_equal(clapp_checkpoint_metadata(f->ckpt, "blocks", &blocks, e, sizeof e), CLAPP_OK);
        assert_string_equal(blocks, "4");
        clapp_free(blocks);
    }
    assert_true(checkpoint_blocks(f) == 4);
    free(err);
    free(metrics);
    free(pipe);
}

/* clapp extract: SIGINT stops it with the features so far and their headers right. */
static void test_extract_sigint(void **state)
{
    fixture *f = *state;
    char *outdir = tu_path(f->dir, "x"), *npy = tu_path(outdir, "a0.c1.npy"), *err;
    char *argv[] = {CLAPP_BIN, "extract", f->pipe, "--random-init", "--data", f->manifest, "--out", outdir,
                    "--element", "c1", NULL};
    pid_t pid;
    int status;
    /* Slow enough to be caught: 200 entries, each the same 30 s file. */
    FILE *m = fopen(f->manifest, "w");
    assert_non_null(m);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(tu_run("ln -sf a.wav '%s/a%d.wav'", f->dir, i), 0);
        fprintf(m, "a%d.wav\n", i);
    }
    fclose(m);
    pid = spawn(argv, f->out, f->err);
    assert_true(pid > 0);
    /* The loop runs once the first file's features exist. */
    for (int i = 0; i < 600 && access(npy, F_OK) != 0; i++) {
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(kill(pid, SIGINT), 0);
    status = wait_status(pid);
    err = tu_read_text(f->err);
    if (status != 130)
        fail_msg("exit %d, expected 130; stderr:\n%s", status, err);
    assert_int_equal(tu_count_substr(err, "interrupted by SIGINT"), 1);
    assert_true(tu_npy_rows_consistent(npy) > 0);
    free(err);
    free(npy);
    free(outdir);
}

/* Whether process pid has `path` open (a descriptor in /proc/pid/fd). */
static int has_open(pid_t pid, const char *path)
{
    char dir[64], link[4096], *fd;
    DIR *d;
    struct dirent *e;
    int found = 0;
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    if (!(d = opendir(dir)))
        return 0;
    while (!found && (e = readdir(d))) {
        ssize_t n;
        if (asprintf(&fd, "%s/%s", dir, e->d_name) < 0)
            break;
        n = readlink(fd, link, sizeof link - 1);
        free(fd);
        if (n > 0) {
            link[n] = 0;
            found = !strcmp(link, path);
        }
    }
    closedir(d);
    return found;
}

/* A FIFO that never gets a writer, and an HTTP server that accepts the
 * connection and never answers: once clapp waits on it (the FIFO open, the
 * connection accepted), the first SIGINT ends the wait. `clapp run` and
 * `clapp train` exit 130 within 2 s (plus twice the start-up time of
 * `clapp --version`, for a loaded machine or the sanitizers), naming the
 * input; train still saves its checkpoint (of 0 blocks), which loads. */
static void test_sigint_wakes_stalled_input(void **state)
{
    fixture *f = *state;
    char *fifo = tu_path(f->dir, "f.fifo"), *port_file = tu_path(f->dir, "port"), *err, *port;
    char *accepted = tu_path(f->dir, "accepted");
    double startup = 0;
    char *http_manifest = tu_path(f->dir, "h.tsv"), url[128];
    char *run_argv[] = {CLAPP_BIN, "run", f->pipe, "--data", f->manifest, NULL};
    char *train_argv[] = {CLAPP_BIN, "train", f->pipe, "--data", f->manifest, "--checkpoint", f->ckpt,
                          "--metrics", f->metrics, NULL};
    char *http_argv[] = {CLAPP_BIN, "run", f->pipe, "--data", http_manifest, NULL};
    char **argvs[3] = {run_argv, train_argv, http_argv};
    const char *names[3] = {"f.fifo", "f.fifo", url};
    pid_t server;
    for (int k = 0; k < 3; k++) {
        char *argv[] = {CLAPP_BIN, "--version", NULL};
        double t0 = now_s();
        pid_t pid = spawn(argv, f->out, f->err);
        assert_true(pid > 0);
        assert_int_equal(wait_status(pid), 0);
        if (now_s() - t0 > startup)
            startup = now_s() - t0;
    }
    assert_int_equal(tu_run("mkfifo '%s'", fifo), 0);
    assert_int_equal(tu_write_text(f->manifest, "f.fifo\n"), 0);
    /* The server: listens on a free port, accepts (and says so in the file
     * `accepted`), never answers. */
    server = fork();
    if (server == 0) {
        execl("/usr/bin/python3", "python3", "-c",
              "import os, socket, sys\n"
              "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(4)\n"
              "open(sys.argv[1] + '.tmp', 'w').write(str(s.getsockname()[1]))\n"
              "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
              "c = []\n"
              "while True:\n"
              "    c.append(s.accept()[0]); open(sys.argv[2], 'w').close()\n", port_file, accepted,
              (char *)NULL);
        _exit(127);
    }
    assert_true(server > 0);
    f->server = server;
    for (int i = 0; i < 100 && access(port_file, F_OK) != 0; i++)
        sleep_s(0.05);
    port = tu_read_text(port_file);
    assert_true(*port);
    snprintf(url, sizeof url, "http://127.0.0.1:%s/a.wav", port);
    free(port);
    {
        char line[160];
        snprintf(line, sizeof line, "%s\n", url);
        assert_int_equal(tu_write_text(http_manifest, line), 0);
    }
    for (int k = 0; k < 3; k++) {
        pid_t pid = spawn(argvs[k], f->out, f->err);
        double t0;
        int ws;
        assert_true(pid > 0);
        /* Until it waits: the FIFO open, or the connection accepted. */
        for (int i = 0; i < 600 && !(k < 2 ? has_open(pid, fifo) : access(accepted, F_OK) == 0); i++)
            sleep_s(0.05);
        sleep_s(0.2);
        t0 = now_s();
        assert_int_equal(kill(pid, SIGINT), 0);
        ws = wait_raw_within(pid, 2.0 + 2 * startup);
        err = tu_read_text(f->err);
        if (ws < 0 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 130)
            fail_msg("clapp %s: %s after SIGINT (status %#x); stderr:\n%s", argvs[k][1],
                     ws < 0 ? "still running" : "not exit 130", ws, err);
        {
            char want[200];
            snprintf(want, sizeof want, "%s: interrupted while waiting for data", names[k]);
            if (tu_count_substr(err, want) != 1 || tu_count_substr(err, "interrupted by SIGINT") != 1)
                fail_msg("clapp %s: expected '%s'; stderr:\n%s", argvs[k][1], want, err);
        }
        if (getenv("CLAPP_TEST_VERBOSE"))
            fprintf(stderr, "clapp %s: exit 130 %.3f s after SIGINT\n", argvs[k][1], now_s() - t0);
        free(err);
    }
    kill(server, SIGKILL);
    waitpid(server, NULL, 0);
    f->server = 0;
    assert_int_equal(checkpoint_blocks(f), 0);
    free(fifo);
    free(accepted);
    free(port_file);
    free(http_manifest);
}

/* Is `name` in the training folder one of the files the test itself made
 * or the run's outputs (anything else is a temporary left behind)? */
static int expected_file(const char *name)
{
    static const char *const ok[] = {".", "..", "a.wav", "m.tsv", "p.pipe", "c.safetensors", "metrics.jsonl",
                                     "out.txt", "err.txt", "feat"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(name, ok[i]))
            return 1;
    return 0;
}

static void check_no_temporary(const char *dir, const char *feat)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    assert_non_null(d);
    while ((e = readdir(d)))
        if (!expected_file(e->d_name))
            fail_msg("%s/%s left behind", dir, e->d_name);
    closedir(d);
    if ((d = opendir(feat))) {
        while ((e = readdir(d)))
            if (strstr(e->d_name, ".partial"))
                fail_msg("%s/%s left behind", feat, e->d_name);
        closedir(d);
    }
}

/* SIGTERM at 20 random moments (fixed seed) from 0 to S + 1.2 s after
 * start, S the start-up time of `clapp --version` here (longer under the
 * sanitizers or a loaded machine):
 * in start-up, while --resume skips the blocks learned, while training,
 * while a periodic checkpoint (every 3 blocks) is written. Each time the
 * checkpoint loads, has no fewer blocks than before (each run resumes from
 * it), and nothing temporary is left; a last run resumes from it to the end
 * of its epochs. A kill before the handler is installed (while the
 * dynamic linker loads FFmpeg and OpenBLAS, 0.1-0.3 s on a busy machine)
 * kills the process outright: nothing had started, and the checkpoint must
 * be the one before, still loading. At least 5 of the 20 must land after
 * the handler (the graceful path: finish the block, save, exit 143). */
static void test_twenty_kills(void **state)
{
    fixture *f = *state;
    uint64_t rng = 20;
    long blocks = -1;
    int handled = 0, early = 0;
    char epochs[32];
    double startup = 0;
    for (int k = 0; k < 3; k++) {
        char *argv[] = {CLAPP_BIN, "--version", NULL};
        double t0 = now_s();
        pid_t pid = spawn(argv, f->out, f->err);
        assert_true(pid > 0);
        assert_int_equal(wait_status(pid), 0);
        if (now_s() - t0 > startup)
            startup = now_s() - t0;
    }
    for (int k = 0; k < 20; k++) {
        int have = access(f->ckpt, F_OK) == 0;
        char *argv[] = {CLAPP_BIN, "train", f->pipe, "--data", f->manifest, "--epochs", "1000", "--checkpoint",
                        f->ckpt, "--checkpoint-every", "3", "--metrics", f->metrics, "--diag-every", "0",
                        have ? "--resume" : NULL, NULL};
        double delay = (startup + 1.2) * (double)(clapp_splitmix64(&rng) >> 11) / 9007199254740992.0;
        pid_t pid = spawn(argv, f->out, f->err);
        int ws;
        assert_true(pid > 0);
        sleep_s(delay);
        assert_int_equal(kill(pid, SIGTERM), 0);
        ws = wait_raw_within(pid, 30.0);
        if (ws >= 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 143) {
            handled++;
        } else if (ws >= 0 && WIFSIGNALED(ws) && WTERMSIG(ws) == SIGTERM) {
            early++;
        } else {
            char *err = tu_read_text(f->err);
            fail_msg("kill %d after %.3f s: status %#x; stderr:\n%s", k, delay, ws, err);
        }
        if (access(f->ckpt, F_OK) == 0) {
            long b = checkpoint_blocks(f);
            if (b < blocks)
                fail_msg("kill %d after %.3f s: the checkpoint went back from %ld to %ld blocks", k, delay, blocks, b);
            blocks = b;
        } else {
            assert_int_equal(blocks, -1);   /* none yet: killed before anything */
        }
        check_no_temporary(f->dir, f->feat);
        if (getenv("CLAPP_TEST_VERBOSE"))
            fprintf(stderr, "kill %2d after %.3f s: %s, checkpoint %ld blocks\n", k, delay,
                    WIFEXITED(ws) ? "exit 143" : "killed", blocks);
    }
    fprintf(stderr, "20 kills (start-up %.3f s): %d handled (exit 143), %d before the handler; checkpoint at "
            "%ld blocks\n", startup, handled, early, blocks);
    assert_true(handled >= 5);
    assert_true(blocks >= 0);
    /* The last run resumes and ends: one more epoch than the checkpoint has
     * begun (30 s of audio in blocks of 2048 samples: 235 blocks an epoch). */
    snprintf(epochs, sizeof epochs, "%ld", blocks / 235 + 1);
    assert_int_equal(tu_run("%s train '%s' --data '%s' --epochs %s --checkpoint '%s' --metrics '%s' --resume -q "
                            "> /dev/null", CLAPP_BIN, f->pipe, f->manifest, epochs, f->ckpt, f->metrics), 0);
    assert_int_equal(checkpoint_blocks(f), (blocks / 235 + 1) * 235);
    check_no_temporary(f->dir, f->feat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sigint_saves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_saves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_element_failure_keeps_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extract_sigint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigint_wakes_stalled_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_twenty_kills, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
