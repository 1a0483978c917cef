/* Checkpoints: round trip, the previous checkpoint survives a writer killed
 * mid-write, and truncated, corrupt or mismatched files are refused with a
 * message naming the file and the cause, leaving the graph untouched. */
#define _GNU_SOURCE
#include <signal.h>
#include <fcntl.h>
#include <sys/file.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/checkpoint.h"
#include "graph/graph.h"
#include "testutil.h"

typedef struct env {
    clapp_host          host;
    tu_log              log;
    clapp_registry      reg;
    clapp_pipeline_desc pd;
    clapp_graph         g;
} env;

static int env_open(env *e, const char *text, int64_t channels, char *err, size_t errlen)
{
    clapp_stream_info src = {3, {1, channels, 4, 0, 0, 0}, 100.0};
    clapp_graph_params gp;
    int rc;
    memset(e, 0, sizeof *e);
    tu_host_init(&e->host, &e->log);
    clapp_registry_init_default(&e->reg, &e->host);
    clapp_registry_load_dir(&e->reg, CLAPP_TEST_FIXTURE_DIR);
    if ((rc = clapp_pipedesc_parse(&e->pd, text, "<test>", err, errlen)) < 0 ||
        (rc = clapp_pipedesc_resolve(&e->pd, &e->reg, err, errlen)) < 0)
        return rc;
    clapp_graph_default_params(&gp);
    return clapp_graph_create(&e->g, &e->pd, &src, &gp, &e->host, err, errlen);
}

static void env_close(env *e)
{
    clapp_graph_destroy(&e->g);
    clapp_pipedesc_free(&e->pd);
    clapp_registry_free(&e->reg);
    tu_log_free(&e->log);
}

static float *gain(env *e, int node)
{
    return e->g.nodes[node].tensors[0].value->data;
}

static void test_round_trip(void **state)
{
    env a, b;
    char err[1024] = "";
    char *dir = tu_tmpdir("ckpt"), *path = tu_path(dir, "c.safetensors");
    clapp_ckpt_options co = {1, 1};
    (void)state;
    assert_int_equal(env_open(&a, "source ! fixture_scale name=s init=1 ! fixture_scale name=t", 5, err, sizeof err), 0);
    for (int c = 0; c < 5; c++) {
        gain(&a, 1)[c] = 0.5f + (float)c;
        gain(&a, 2)[c] = -(float)c;
    }
    a.g.blocks = 42;
    assert_int_equal(clapp_ckpt_save(&a.g, path, &co, err, sizeof err), 0);
    assert_int_equal(env_open(&b, "source ! fixture_scale name=s ! fixture_scale name=t", 5, err, sizeof err), 0);
    assert_int_equal(clapp_ckpt_load(&b.g, path, &co, err, sizeof err), 0);
    for (int c = 0; c < 5; c++) {
        assert_true(gain(&b, 1)[c] == 0.5f + (float)c);
        assert_true(gain(&b, 2)[c] == -(float)c);
    }
    assert_int_equal(b.g.blocks, 42);
    char *pipe = clapp_ckpt_read_meta(path, "pipeline", err, sizeof err);
    assert_non_null(pipe);
    assert_non_null(strstr(pipe, "fixture_scale name=s"));
    free(pipe);
    /* No temporary files are left behind. */
    assert_int_equal(tu_run("test $(ls %s | wc -l) -eq 1", dir), 0);
    env_close(&a);
    env_close(&b);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

static void expect_refused(const char *path, const char *text, int64_t channels, const char *cause)
{
    env b;
    char err[1024] = "";
    clapp_ckpt_options co = {0, 1};
    assert_int_equal(env_open(&b, text, channels, err, sizeof err), 0);
    for (int c = 0; c < channels; c++)
        gain(&b, 1)[c] = 7.0f;
    assert_true(clapp_ckpt_load(&b.g, path, &co, err, sizeof err) < 0);
    if (!strstr(err, path) || !strstr(err, cause))
        fail_msg("message '%s' should name %s and say '%s'", err, path, cause);
    for (int c = 0; c < channels; c++)
        assert_true(gain(&b, 1)[c] == 7.0f);   /* untouched */
    env_close(&b);
}

static void test_bad_files_refused(void **state)
{
    env a;
    char err[1024] = "";
    char *dir = tu_tmpdir("ckpt"), *path = tu_path(dir, "c.safetensors");
    clapp_ckpt_options co = {0, 1};
    (void)state;
    assert_int_equal(env_open(&a, "source ! fixture_scale name=s init=3", 6, err, sizeof err), 0);
    assert_int_equal(clapp_ckpt_save(&a.g, path, &co, err, sizeof err), 0);
    env_close(&a);

    expect_refused(path, "source ! fixture_scale name=s", 4, "shape [6] in the checkpoint but [4]");
    expect_refused(path, "source ! fixture_scale name=other", 6, "no element 'other'");

    char *p = tu_path(dir, "trunc.safetensors");
    assert_int_equal(tu_run("head -c $(( $(stat -c %%s %s) - 5 )) %s > %s", path, path, p), 0);
    expect_refused(p, "source ! fixture_scale name=s", 6, "does not fit the file");
    free(p);
    p = tu_path(dir, "short.safetensors");
    assert_int_equal(tu_run("head -c 5 %s > %s", path, p), 0);
    expect_refused(p, "source ! fixture_scale name=s", 6, "truncated");
    free(p);
    p = tu_path(dir, "garbage.safetensors");
    assert_int_equal(tu_run("cp %s %s && printf '}}]]' | dd of=%s bs=1 seek=9 conv=notrunc status=none",
                            path, p, p), 0);
    expect_refused(p, "source ! fixture_scale name=s", 6, "corrupt");
    free(p);
    p = tu_path(dir, "huge.safetensors");
    assert_int_equal(tu_run("printf '\\377\\377\\377\\377\\000\\000\\000\\000{}' > %s", p), 0);
    expect_refused(p, "source ! fixture_scale name=s", 6, "not a safetensors file");
    free(p);
    p = tu_path(dir, "missing.safetensors");
    expect_refused(p, "source ! fixture_scale name=s", 6, "cannot open");
    free(p);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

/* A writer killed at random moments never leaves a broken checkpoint. */
static void test_kill_during_write(void **state)
{
    char err[1024] = "";
    char *dir = tu_tmpdir("ckpt"), *path = tu_path(dir, "c.safetensors");
    clapp_ckpt_options co = {0, 1};
    const int64_t C = 2 * 1024 * 1024;   /* 8 MB per checkpoint: writes take a while */
    (void)state;
    {
        env a;
        assert_int_equal(env_open(&a, "source ! fixture_scale name=s init=1", C, err, sizeof err), 0);
        assert_int_equal(clapp_ckpt_save(&a.g, path, &co, err, sizeof err), 0);
        env_close(&a);
    }
    for (int round = 0; round < 4; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            env w;
            if (env_open(&w, "source ! fixture_scale name=s", C, err, sizeof err) < 0)
                _exit(3);
            for (int k = 0;; k++) {
                for (int64_t c = 0; c < C; c++)
                    gain(&w, 1)[c] = (float)(k + 2);
                clapp_ckpt_save(&w.g, path, &co, err, sizeof err);
            }
        }
        struct timespec ts = {0, 30000000L + 17000000L * round};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        env b;
        assert_int_equal(env_open(&b, "source ! fixture_scale name=s", C, err, sizeof err), 0);
        if (clapp_ckpt_load(&b.g, path, &co, err, sizeof err) < 0)
            fail_msg("round %d: %s", round, err);
        /* Whole: every value from the same write. */
        float v = gain(&b, 1)[0];
        assert_true(gain(&b, 1)[C - 1] == v);
        env_close(&b);
    }
    tu_run("rm -f %s/*.tmp.*", dir);
    tu_rmtree(dir);
    free(path);
    free(dir);
}

/* dst: src with its header rewritten by the Python statement `edit` (on
 * the dict h) and its data section by `data_edit` (on the bytearray d). */
static void craft(const char *src, const char *dst, const char *edit, const char *data_edit)
{
    char *script = NULL;
    assert_true(asprintf(&script,
                         "import json,struct,sys\n"
                         "b=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',b[:8])[0]\n"
                         "h=json.loads(b[8:8+n]); d=bytearray(b[8+n:])\n"
                         "%s\n%s\n"
                         "t=json.dumps(h,separators=(',',':')).encode(); t+=b' '*((-len(t))%%8)\n"
                         "open(sys.argv[2],'wb').write(struct.pack('<Q',len(t))+t+bytes(d))\n",
                         edit, data_edit) > 0);
    {
        char *py = NULL;
        FILE *f;
        assert_true(asprintf(&py, "%s.py", dst) > 0);
        f = fopen(py, "w");
        assert_non_null(f);
        fputs(script, f);
        fclose(f);
        assert_int_equal(tu_run("python3 '%s' '%s' '%s'", py, src, dst), 0);
        unlink(py);
        free(py);
    }
    free(script);
}

/* Crafted metadata and data: refused with the file and the key named, the
 * pipeline's tensors untouched. */
static void test_crafted_refused(void **state)
{
    env a;
    char err[1024] = "";
    char *dir = tu_tmpdir("ckpt"), *path = tu_path(dir, "c.safetensors"), *p = tu_path(dir, "x.safetensors");
    const char *one = "source ! fixture_scale name=s", *two = "source ! fixture_scale name=s ! fixture_scale name=t";
    clapp_ckpt_options co = {1, 1};
    (void)state;
    assert_int_equal(env_open(&a, "source ! fixture_scale name=s init=3 ! fixture_scale name=t", 6, err, sizeof err), 0);
    assert_int_equal(clapp_ckpt_save(&a.g, path, &co, err, sizeof err), 0);
    env_close(&a);

    craft(path, p, "h['__metadata__']['blocks']='9223372036854775807'", "");
    expect_refused(p, two, 6, "metadata 'blocks' is '9223372036854775807'");
    craft(path, p, "h['__metadata__']['blocks']='abc'", "");
    expect_refused(p, two, 6, "metadata 'blocks' is 'abc'");
    craft(path, p, "h['__metadata__']['optim_step']='-5'", "");
    expect_refused(p, two, 6, "metadata 'optim_step' is '-5'");
    craft(path, p, "h['__metadata__']['blocks']=''", "");
    expect_refused(p, two, 6, "metadata 'blocks'");
    craft(path, p, "h['s.gain']['data_offsets']=[0.5,24.5]", "");
    expect_refused(p, two, 6, "tensor s.gain: data_offsets are not whole numbers");
    craft(path, p, "h['s.gain']['data_offsets']=[1e30,1e30]", "");
    expect_refused(p, two, 6, "tensor s.gain: data_offsets are not whole numbers");
    craft(path, p, "h['s.gain']['data_offsets']=[4096,4120]", "");
    expect_refused(p, two, 6, "tensor s.gain: data [4096, 4120) does not fit the file");
    craft(path, p, "h['s.gain']['data_offsets']=[-24,0]", "");
    expect_refused(p, two, 6, "data_offsets");
    craft(path, p, "h['t.gain']['data_offsets']=h['s.gain']['data_offsets']; del h['__metadata__']['checksums']", "");
    expect_refused(p, two, 6, "overlap");
    /* Non-finite weights (in a file without checksums, which would catch the change first). */
    craft(path, p, "del h['__metadata__']['checksums']",
          "o=h['s.gain']['data_offsets'][0]+8; d[o:o+4]=struct.pack('<f',float('nan'))");
    expect_refused(p, one, 6, "tensor s.gain: value 2 is NaN");
    craft(path, p, "del h['__metadata__']['checksums']",
          "o=h['s.gain']['data_offsets'][0]; d[o:o+4]=struct.pack('<f',float('-inf'))");
    expect_refused(p, one, 6, "tensor s.gain: value 0 is infinite");
    /* One bit flipped in the data: the checksum catches it. */
    craft(path, p, "", "o=h['t.gain']['data_offsets'][0]+5; d[o]^=0x10");
    expect_refused(p, two, 6, "tensor t.gain: checksum mismatch");
    craft(path, p, "h['__metadata__']['checksums']='[1'", "");
    expect_refused(p, two, 6, "'checksums' is not a JSON object");
    /* An element version of another major, as plugins are checked. */
    craft(path, p, "e=json.loads(h['__metadata__']['elements']); e['s']['version']='99.0.0'; "
          "h['__metadata__']['elements']=json.dumps(e)", "");
    expect_refused(p, two, 6, "version 99.0.0 in the checkpoint but 0.1.0 here");
    /* A checkpoint from before checksums (and a newer minor) still loads. */
    craft(path, p, "del h['__metadata__']['checksums']; e=json.loads(h['__metadata__']['elements']); "
          "e['s']['version']='0.7.1'; h['__metadata__']['elements']=json.dumps(e)", "");
    {
        env b;
        assert_int_equal(env_open(&b, two, 6, err, sizeof err), 0);
        if (clapp_ckpt_load(&b.g, p, &co, err, sizeof err) != 0)
            fail_msg("%s", err);
        assert_true(gain(&b, 1)[0] == 3.0f);
        env_close(&b);
    }
    /* The untouched file still loads. */
    {
        env b;
        assert_int_equal(env_open(&b, two, 6, err, sizeof err), 0);
        assert_int_equal(clapp_ckpt_load(&b.g, path, &co, err, sizeof err), 0);
        env_close(&b);
    }
    tu_rmtree(dir);
    free(p);
    free(path);
    free(dir);
}

/* A temporary file left by a save that was killed (kill -9, a second
 * Ctrl-C) is removed by the next save; one whose writer still holds its
 * lock, and other files, are not. */
static void test_stale_temps_removed(void **state)
{
    env a;
    char err[1024] = "";
    char *dir = tu_tmpdir("ckpt"), *path = tu_path(dir, "c.safetensors");
    char *stale = tu_path(dir, "c.safetensors.tmp.AAAAAA"), *busy = tu_path(dir, "c.safetensors.tmp.BBBBBB");
    char *other = tu_path(dir, "d.safetensors.tmp.CCCCCC");
    clapp_ckpt_options co = {0, 1};
    int fd;
    (void)state;
    assert_int_equal(tu_write_text(stale, "half a checkpoint"), 0);
    assert_int_equal(tu_write_text(busy, "being written"), 0);
    assert_int_equal(tu_write_text(other, "another file's"), 0);
    fd = open(busy, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    assert_int_equal(env_open(&a, "source ! fixture_scale name=s", 3, err, sizeof err), 0);
    assert_int_equal(clapp_ckpt_save(&a.g, path, &co, err, sizeof err), 0);
    assert_int_equal(access(stale, F_OK), -1);
    assert_int_equal(access(busy, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0);
    close(fd);
    env_close(&a);
    tu_rmtree(dir);
    free(stale);
    free(busy);
    free(other);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_files_refused),
        cmocka_unit_test(test_kill_during_write),
        cmocka_unit_test(test_crafted_refused),
        cmocka_unit_test(test_stale_temps_removed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
