/* clapp eval: the probe yardstick. On a small flite corpus and the paper's
 * audio encoder (random init, narrowed to keep the test fast):
 *   - what the probes were measured on equals what the encoder produces:
 *     the labelled test frames counted from `clapp extract`'s features and
 *     the .phn files, and the majority-class rate computed from them;
 *   - the probe learning rate is the one with the best validation accuracy;
 *   - the spread of the test accuracy over probe seeds is at most 1 point;
 *   - the same command gives the same numbers;
 *   - bad input: a missing validation manifest is one clear error. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define CLAPP_BIN CLAPP_TEST_BINARY_DIR "/clapp"
#define CORPUS_BIN CLAPP_TEST_BINARY_DIR "/make_speech_corpus"
#define PIPE CLAPP_TEST_SOURCE_DIR "/pipelines/audio_clapp.pipe"
#define NARROW "--set conv1.out=64 --set conv2.out=64 --set conv3.out=64 --set conv4.out=64 " \
               "--set conv5.out=64 --set gru.hidden=32 --set source0.mode=stream"

/* Reads the eval JSON and the extracted features; checks counts, majority,
 * the choice on validation and the seed spread. */
static const char *check_py =
    "import json, os, re, sys\n"
    "import numpy as np\n"
    "d = sys.argv[1]\n"
    "r = json.load(open(d + '/eval.json'))\n"
    "assert r['val'] and r['random_init'] and r['probe_seeds'] == 3, r\n"
    "def phones(phn):\n"
    "    return [(int(a), int(b), p) for a, b, p in (l.split() for l in open(phn) if l.strip())]\n"
    "def sidecars(split, element):\n"
    "    out = {}\n"
    "    for top, _, files in os.walk('%s/x-%s' % (d, split)):\n"
    "        for f in files:\n"
    "            if f.endswith('.' + element + '.json'):\n"
    "                side = json.load(open(os.path.join(top, f)))\n"
    "                out[side['key']] = side\n"
    "    return out\n"
    "def frame_labels(split, element):\n"
    "    out = []\n"
    "    sides = sidecars(split, element)\n"
    "    for line in open(d + '/corpus/' + split + '.tsv'):\n"
    "        path, _, phn = line.rstrip('\\n').split('\\t')\n"
    "        side = sides[re.sub(r'[^A-Za-z0-9._/-]', '_', os.path.splitext(path)[0])]   # the manifest's key\n"
    "        segs = phones(d + '/corpus/' + phn)\n"
    "        for j in range(side['frames']):\n"
    "            s = (side['pts_first'] + j + 0.5) / side['rate'] * 16000\n"
    "            lab = [p for a, b, p in segs if a <= s < b]\n"
    "            if lab: out.append(lab[0])\n"
    "    return out\n"
    "for probe, element in (('probe_conv5', 'conv5'), ('probe_gru', 'gru')):\n"
    "    p = r['probes'][probe]\n"
    "    test, train = frame_labels('probe-test', element), frame_labels('probe-train', element)\n"
    "    # the source turns .phn into 10 ms label frames; a frame centre near a boundary may\n"
    "    # fall either side, so counts agree closely, not exactly\n"
    "    assert abs(p['test_items'] - len(test)) <= 0.01 * len(test), (p['test_items'], len(test))\n"
    "    assert abs(p['train_items'] - len(train)) <= 0.01 * len(train), (p['train_items'], len(train))\n"
    "    top = max(set(train), key=train.count)\n"
    "    maj = test.count(top) / len(test)\n"
    "    assert abs(p['majority'] - maj) < 0.01, (p['majority'], maj, top)\n"
    "    grid = p['selection']['grid']\n"
    "    assert len(grid) == 3, grid\n"
    "    best = max(grid, key=lambda g: g['val_accuracy'])\n"
    "    assert p['probe_lr'] == best['probe_lr'], (p['probe_lr'], grid)\n"
    "    seeds = p['seeds']\n"
    "    assert len(seeds) == 3 and len(set(seeds)) > 1, seeds   # seeds differ\n"
    "    spread = max(seeds) - min(seeds)\n"
    "    assert spread <= 0.01, (probe, seeds)\n"
    "    assert abs(np.mean(seeds) - p['accuracy']) < 1e-5 and abs(np.std(seeds, ddof=1) - p['sd']) < 1e-5\n"
    "    assert p['accuracy'] > p['majority'] + 0.02, p   # the probe learned something\n"
    "    print(probe, 'items', p['test_items'], len(test), 'majority %.4f %.4f' % (p['majority'], maj),\n"
    "          'seeds', seeds, 'spread %.4f' % spread, 'lr', p['probe_lr'])\n";

static void test_eval_yardstick(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("eval"), *py = tu_path(dir, "check.py");
    assert_non_null(dir);
    assert_int_equal(tu_run("%s --out %s/corpus --hours 0.1 --probe-hours 0.03 --seed 3 -q > /dev/null",
                            CORPUS_BIN, dir), 0);
    assert_int_equal(tu_run("test -s %s/corpus/probe-val.tsv", dir), 0);
    for (int run = 0; run < 2; run++)
        assert_int_equal(tu_run("cd %s && %s eval %s --random-init " NARROW " --probe conv5 --probe gru "
                                "--train corpus/probe-train.tsv --val corpus/probe-val.tsv "
                                "--test corpus/probe-test.tsv --probe-lrs 3e-3,1e-2,3e-2 --epochs 20 "
                                "--json %s.json -q > /dev/null", dir, CLAPP_BIN, PIPE,
                                run ? "again" : "eval"), 0);
    /* the same command gives the same numbers */
    assert_int_equal(tu_run("cd %s && /usr/bin/python3 -c \"import json; a = json.load(open('eval.json'));"
                            "b = json.load(open('again.json'));"
                            "assert all(a['probes'][k]['seeds'] == b['probes'][k]['seeds'] for k in a['probes'])\"",
                            dir), 0);
    for (int s = 0; s < 2; s++)
        assert_int_equal(tu_run("cd %s && %s extract %s --random-init " NARROW " --data corpus/%s.tsv "
                                "--out x-%s --element conv5 --element gru -q", dir, CLAPP_BIN, PIPE,
                                s ? "probe-test" : "probe-train", s ? "probe-test" : "probe-train"), 0);
    assert_int_equal(tu_write_text(py, check_py), 0);
    assert_int_equal(tu_run("/usr/bin/python3 %s %s", py, dir), 0);
    free(py);
    tu_rmtree(dir);
    free(dir);
}

static void test_eval_bad_val(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("eval_bad"), *err;
    assert_non_null(dir);
    assert_int_equal(tu_run("cd %s && ffmpeg -v error -f lavfi -i 'sine=f=330:r=16000:d=1' a.wav && "
                            "printf 'a.wav\\n' > m.tsv", dir), 0);
    /* exit status 2 and one line naming the missing file */
    assert_int_equal(tu_run("cd %s && %s eval %s --random-init " NARROW " --probe conv5 --train m.tsv "
                            "--val missing.tsv --test m.tsv -q 2> err.txt; test $? -eq 2", dir, CLAPP_BIN, PIPE),
                     0);
    err = tu_path(dir, "err.txt");
    assert_int_equal(tu_run("grep -q 'missing.tsv' %s && test $(grep -c 'error' %s) -eq 1", err, err), 0);
    free(err);
    tu_rmtree(dir);
    free(dir);
}

/* Clip probes: the time average of each clip is recorded and replayed; every
 * clip is measured once, the majority rate of a balanced corpus is 1/10. */
static void test_eval_clips(void **state)
{
    (void)state;
    char *dir = tu_tmpdir("eval_clips");
    assert_non_null(dir);
    assert_int_equal(tu_run("cd %s && %s/make_action_corpus --out c --clips-per-class 3 --test-clips-per-class 2 "
                            "--seconds 2 --fps 10 --size 32 --seed 1 -q && %s/make_action_corpus --out v "
                            "--clips-per-class 1 --test-clips-per-class 1 --seconds 2 --fps 10 --size 32 --seed 2 -q "
                            "&& printf '%%s\n' 'source name=src kind=video width=32 height=32 fps=10 color=gray "
                            "block=20 lanes=4 mode=window window_align=1 gain=4 offset=-2' '! conv3d name=conv1 out=8 "
                            "kt=1 kh=3 kw=3 st=1 sh=2 sw=2 pt=0 ph=1 pw=1' '! clapp name=loss1 mode=clapp-s steps=3' "
                            "> p.pipe", dir, CLAPP_TEST_BINARY_DIR, CLAPP_TEST_BINARY_DIR), 0);
    assert_int_equal(tu_run("cd %s && %s eval p.pipe --random-init --train c/train.tsv --val v/test.tsv "
                            "--test c/test.tsv --probe conv1:probe_action --probe-seeds 2 --epochs 5 --json e.json -q "
                            "> /dev/null && /usr/bin/python3 -c \"import json; p = json.load(open('e.json'))['probes']"
                            "['probe_conv1']; assert p['test_items'] == 20 and p['train_items'] == 30, p; "
                            "assert abs(p['majority'] - 0.1) < 1e-9, p; assert len(p['seeds']) == 2, p; "
                            "assert p['report']['clips'] == 20, p\"", dir, CLAPP_BIN), 0);
    tu_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_yardstick),
        cmocka_unit_test(test_eval_clips),
        cmocka_unit_test(test_eval_bad_val),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
