/* clapp extract: one .npy + JSON sidecar per (file, element), read back with
 * Python's standard library and numpy (/usr/bin/python3) against a
 * convolution computed in numpy from the checkpoint's own bytes; element
 * choice and errors; peak memory over a one-hour file stays bounded. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"

static const char *check_py =
    "import json, struct, sys\n"
    "import numpy as np\n"
    "d = sys.argv[1]\n"
    "raw = open(d + '/c.st', 'rb').read()\n"
    "n = struct.unpack('<Q', raw[:8])[0]\n"
    "hdr = json.loads(raw[8:8 + n].decode())\n"
    "meta = hdr.pop('__metadata__')\n"
    "assert meta['format'] == 'clapp-checkpoint-1', meta\n"
    "assert json.loads(meta['elements'])['conv1']['id'] == 'conv1d'\n"
    "assert int(meta['blocks']) == 5, meta['blocks']\n"
    "def tensor(name):\n"
    "    e = hdr[name]\n"
    "    a, b = e['data_offsets']\n"
    "    assert e['dtype'] == 'F32'\n"
    "    return np.frombuffer(raw[8 + n + a:8 + n + b], dtype='<f4').reshape(e['shape'])\n"
    "w, bias = tensor('conv1.weight'), tensor('conv1.bias')\n"
    "assert w.shape == (6, 1, 10) and bias.shape == (6,), (w.shape, bias.shape)\n"
    "assert np.abs(bias).max() > 0  # trained: Adam moved the zero-initialised bias\n"
    "for key in ('f0', 'f1'):\n"
    "    x = np.load(d + '/x/' + key + '.src.npy')\n"
    "    y = np.load(d + '/x/' + key + '.conv1.npy')\n"
    "    sx = json.load(open(d + '/x/' + key + '.src.json'))\n"
    "    sy = json.load(open(d + '/x/' + key + '.conv1.json'))\n"
    "    xp = np.concatenate([np.zeros((2, 1)), x.astype(np.float64), np.zeros((2, 1))])\n"
    "    nout = (len(xp) - 10) // 5 + 1\n"
    "    cols = np.stack([xp[t * 5:t * 5 + 10, 0] for t in range(nout)])\n"
    "    ref = np.maximum(cols @ w[:, 0, :].astype(np.float64).T + bias, 0)\n"
    "    assert y.dtype == np.float32 and y.shape == (nout, 6), (y.shape, nout)\n"
    "    err = np.abs(ref - y).max()\n"
    "    assert err < 1e-5 * max(1.0, np.abs(ref).max()), err\n"
    "    assert sy['frames'] == nout and sy['dims'] == [6] and sy['rate'] == 3200, sy\n"
    "    assert sy['element'] == 'conv1' and sy['type'] == 'conv1d' and sy['pts_first'] == 0, sy\n"
    "    assert sy['checkpoint'].endswith('c.st') and sy['checkpoint_blocks'] == 5, sy\n"
    "    assert sx['frames'] == len(x) and sx['rate'] == 16000 and sx['dims'] == [1], sx\n"
    "    print(key, 'frames', nout, 'max_err', err)\n";

static char *setup(const char *tag)
{
    char *dir = tu_tmpdir(tag), *p;
    assert_non_null(dir);
    /* lengths that are not multiples of the block or of the stride */
    assert_int_equal(tu_run("cd %s && ffmpeg -v error -f lavfi -i anoisesrc=d=1.37:r=16000:a=0.3:seed=1 f0.wav && "
                            "ffmpeg -v error -f lavfi -i 'sine=f=330:r=16000:d=2.011' f1.wav && "
                            "ffmpeg -v error -f lavfi -i anoisesrc=d=1.2:r=16000:a=0.3:seed=2 f2.wav && "
                            "printf 'f0.wav\\nf1.wav\\nf2.wav\\n' > m.tsv", dir), 0);
    p = tu_path(dir, "p.pipe");
    /* window mode for training; extract reads whole files regardless */
    assert_int_equal(tu_write_text(p,
        "source name=src rate=16000 block=4000 lanes=2 mode=window window_align=160\n"
        "! conv1d name=conv1 out=6 kernel=10 stride=5 pad=2\n"
        "! clapp name=loss1 mode=clapp-s steps=3 negatives=2 window=0\n"
        "! conv1d name=conv2 out=4 kernel=8 stride=4 pad=2\n"
        "! clapp name=loss2 mode=clapp-s steps=3 negatives=2 window=0\n"), 0);
    free(p);
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 3 --lr 0.01 --checkpoint c.st -q "
                            "> /dev/null", dir, CLAPP_BIN), 0);
    return dir;
}

static void test_extract_read_by_python(void **state)
{
    (void)state;
    char *dir = setup("extract_py"), *py = tu_path(dir, "check.py");
    assert_int_equal(tu_write_text(py, check_py), 0);
    assert_int_equal(tu_run("cd %s && %s extract p.pipe --checkpoint c.st --data m.tsv --out x "
                            "--element src --element conv1 -q", dir, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && /usr/bin/python3 check.py %s", dir, dir), 0);
    /* only the chosen elements */
    assert_int_equal(tu_run("test ! -e %s/x/f0.conv2.npy && test $(ls %s/x | wc -l) -eq 12", dir, dir), 0);
    free(py);
    tu_rmtree(dir);
    free(dir);
}

static void test_extract_default_every_layer(void **state)
{
    (void)state;
    char *dir = setup("extract_default");
    assert_int_equal(tu_run("cd %s && %s extract p.pipe --checkpoint c.st --data m.tsv --out y -q && "
                            "ls y | sort | tr '\\n' ' ' > list.txt && "
                            "test \"$(cat list.txt)\" = 'f0.conv1.json f0.conv1.npy f0.conv2.json f0.conv2.npy "
                            "f1.conv1.json f1.conv1.npy f1.conv2.json f1.conv2.npy f2.conv1.json f2.conv1.npy "
                            "f2.conv2.json f2.conv2.npy '", dir, CLAPP_BIN), 0);
    /* conv2 at 800/s: 1.37 s = 21920 samples -> (21920 + 4 - 10)/5 + 1 = 4383 conv1 frames
     * -> (4383 + 4 - 8)/4 + 1 = 1095 */
    assert_int_equal(tu_run("grep -q '\"frames\":.1095,' %s/y/f0.conv2.json && grep -q '\"rate\":.800,' "
                            "%s/y/f0.conv2.json", dir, dir), 0);
    tu_rmtree(dir);
    free(dir);
}

static void test_extract_errors(void **state)
{
    (void)state;
    char *dir = setup("extract_err");
    assert_int_equal(tu_run("cd %s && %s extract p.pipe --checkpoint c.st --data m.tsv --out z --element nosuch "
                            "2> e.txt; s=$?; cat e.txt; test $s -eq 2 && grep -q -- '--element nosuch: no element "
                            "of that name; layers of .*p.pipe: src conv1 conv2' e.txt", dir, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && %s extract p.pipe --checkpoint c.st --data m.tsv --out z --element loss1 "
                            "2> e.txt; test $? -eq 2 && grep -q 'not a layer' e.txt", dir, CLAPP_BIN), 0);
    /* a checkpoint of another pipeline: shapes differ, refused naming the tensor */
    assert_int_equal(tu_run("cd %s && sed 's/out=6/out=7/' p.pipe > q.pipe && %s extract q.pipe --checkpoint c.st "
                            "--data m.tsv --out z 2> e.txt; s=$?; cat e.txt; test $s -eq 2 && grep -q "
                            "'tensor conv1.weight has shape \\[6, 1, 10\\] in the checkpoint but \\[7, 1, 10\\]' e.txt",
                            dir, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && head -c 1000 c.st > t.st && %s extract p.pipe --checkpoint t.st "
                            "--data m.tsv --out z 2> e.txt; test $? -eq 2 && grep -q 't.st: .*truncated' e.txt",
                            dir, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && %s extract p.pipe --data m.tsv --out z 2> e.txt; test $? -eq 2 && "
                            "grep -q 'extract needs PIPE, one of --checkpoint C and --random-init, --data "
                            "MANIFEST and --out DIR' e.txt", dir, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && %s extract p.pipe --checkpoint c.st --random-init --data m.tsv --out z "
                            "2> e.txt; test $? -eq 2 && grep -q 'one of --checkpoint C and --random-init' e.txt",
                            dir, CLAPP_BIN), 0);
    tu_rmtree(dir);
    free(dir);
}

/* --random-init: the seeded initialisation, bit for bit the weights of a
 * checkpoint that training at lr 0 wrote from the same seed; another seed
 * gives other features; the sidecar says there was no checkpoint. */
static void test_extract_random_init(void **state)
{
    (void)state;
    char *dir = setup("extract_rand");
    assert_int_equal(tu_run("cd %s && %s train p.pipe --data m.tsv --epochs 1 --lr 0 --seed 7 --checkpoint r.st -q "
                            "> /dev/null && %s extract p.pipe --checkpoint r.st --data m.tsv --out a --seed 7 -q && "
                            "%s extract p.pipe --random-init --data m.tsv --out b --seed 7 -q && "
                            "%s extract p.pipe --random-init --data m.tsv --out c --seed 8 -q && "
                            "%s extract p.pipe --checkpoint c.st --data m.tsv --out t -q",
                            dir, CLAPP_BIN, CLAPP_BIN, CLAPP_BIN, CLAPP_BIN, CLAPP_BIN), 0);
    assert_int_equal(tu_run("cd %s && for f in f0 f1 f2; do for e in conv1 conv2; do "
                            "cmp a/$f.$e.npy b/$f.$e.npy && ! cmp -s b/$f.$e.npy c/$f.$e.npy && "
                            "! cmp -s b/$f.$e.npy t/$f.$e.npy || exit 1; done; done && "
                            "grep -q '\"checkpoint\":.null' b/f0.conv2.json", dir), 0);
    tu_rmtree(dir);
    free(dir);
}

/* One hour of audio through a two-layer encoder: peak RSS of the process. */
static void test_extract_one_hour_memory(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("extract_hour"), *cmd = NULL;
    struct rusage ru;
    int wstatus = 0;
    pid_t pid;
    assert_non_null(dir);
    assert_int_equal(tu_run("cd %s && ffmpeg -v error -f lavfi -i anoisesrc=d=3600:r=16000:a=0.3 -c:a flac hour.flac && "
                            "echo hour.flac > m.tsv && printf '%%s\\n' "
                            "'source rate=16000 block=20480 lanes=1 mode=window window_align=160' "
                            "'! conv1d name=conv1 out=32 kernel=10 stride=5 pad=2' '! clapp name=loss1 steps=4' "
                            "'! conv1d name=conv2 out=32 kernel=8 stride=32 pad=2' '! clapp name=loss2 steps=4' > p.pipe && "
                            "printf 'hour.flac\\n' > t.tsv && "
                            "ffmpeg -v error -i hour.flac -t 5 short.flac && echo short.flac > s.tsv && "
                            "%s train p.pipe --data s.tsv --checkpoint c.st -q > /dev/null", dir, CLAPP_BIN), 0);
    assert_true(asprintf(&cmd, "cd %s && exec %s extract p.pipe --checkpoint c.st --data m.tsv --out x "
                         "--element conv2 -q", dir, CLAPP_BIN) > 0);
    pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    assert_int_equal(wait4(pid, &wstatus, 0, &ru), pid);
    assert_true(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    fprintf(stderr, "extract of 1 h of 16 kHz audio: peak RSS %.1f MB\n", (double)ru.ru_maxrss / 1024.0);
#ifndef CLAPP_SANITIZED
    /* (shadow memory and quarantine make RSS meaningless under ASan) */
    assert_true(ru.ru_maxrss < 200 * 1024);
#endif
    /* 100 frames/s for an hour, 32 channels */
    assert_int_equal(tu_run("grep -q '\"frames\":.360000,' %s/x/hour.conv2.json && "
                            "test $(stat -c %%s %s/x/hour.conv2.npy) -eq $((128 + 360000 * 32 * 4))", dir, dir), 0);
    free(cmd);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extract_read_by_python),
        cmocka_unit_test(test_extract_default_every_layer),
        cmocka_unit_test(test_extract_errors),
        cmocka_unit_test(test_extract_random_init),
        cmocka_unit_test(test_extract_one_hour_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
